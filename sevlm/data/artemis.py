"""Reading and validating ArtEmis annotations (v1.0 and v2.0 "Combined").

Formats
-------
- v1.0 ``artemis_dataset_release_v0.csv``: columns ``art_style, painting, emotion,
  utterance, repetition`` (extra columns are ignored).
- v2.0 ``Contrastive.csv``: the same columns plus ``anchor_art_style, anchor_painting``
  (``repetition`` may be absent there: it is then the painting's number of rows in that
  file). v2.0 "Combined" = v1.0 + Contrastive.csv (splits: :mod:`sevlm.data.splits`).
- Images (WikiArt layout): ``<image_dir>/<art_style>/<painting>.jpg``.

A painting is identified by ``painting_id = "<art_style>/<painting>"`` with both parts in
Unicode NFC. WikiArt names may be non-ASCII and the same name can reach us in NFC (most
CSVs) or NFD (files copied through macOS); :func:`resolve_image_paths` matches image files by
NFC-normalising the directory listings, so both spellings find the same file.

Preprocessing (ArtEmis' ``preprocess_artemis_data.py --preprocess-for-deep-nets``, with the
fixes of REFERENCE.md):

1. Utterances with fewer than ``min_tokens`` (5) or more than ``max_tokens`` (30) word
   tokens (``\\w+`` runs and single punctuation marks, like ``nltk.word_tokenize``) are
   dropped in every split, as ArtEmis does (counted skips ``too_short`` / ``too_long``).
   ``data.long_utterances="keep"`` keeps the long ones instead (the tokenizer then cuts
   them at the model length, counted as a truncation by the training examples).
2. The split (``sevlm.data.splits``): "rest" for ``repetition > max_repetition`` (40), then
   85/5/10 by painting with a fixed seed; v2 keeps every v1 painting's v1 split and puts
   each contrastive painting where its anchor is.

Bad input (each case is tested in ``tests/test_data.py``); "row N" is the 1-based data row
of the CSV (the header is not counted):

=============================  ===========================================================
case                           decision
=============================  ===========================================================
CSV file missing / unreadable  ``FileNotFoundError`` / :class:`ArtEmisFormatError` naming
                               the file
missing required column        :class:`ArtEmisFormatError` naming the file and column(s)
unknown emotion label          :class:`ArtEmisFormatError` naming the file, rows and values
                               (``on_unknown_emotion="skip"``: counted skip instead)
empty / NaN utterance          counted skip ``empty_utterance`` (file + rows in the report)
empty art_style / painting     counted skip ``missing_painting``
non-numeric repetition         :class:`ArtEmisFormatError` naming the file and rows
exact duplicate row            counted skip ``duplicate_row``, the first occurrence is kept
                               (same painting, emotion and whitespace-normalised utterance)
too short / too long utterance counted skip ``too_short`` / ``too_long`` (long ones kept
                               with ``long_utterances="keep"``)
v2 anchor not in the v1 file   counted (``contrastive_anchor_missing_from_v1_paintings``);
                               :class:`ArtEmisFormatError` when no anchor is there at all
NFC vs NFD painting names      normalised to NFC (counted as a note), images found either way
missing image file             counted skip ``missing_image``: the painting (all its rows)
                               is excluded; an error if no image at all is found
corrupt image file             counted skip ``corrupt_image`` at the feature-cache stage
                               (see :mod:`sevlm.data.feature_cache`), painting excluded
=============================  ===========================================================

Everything is vectorised pandas (explicit string dtypes): the 455k-row v1.0 file loads
and validates in a few seconds (see ``benchmarks/bench_data.py``).
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

try:  # fast vectorised string kernels (pandas 3 stores strings in pyarrow when installed)
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError:  # pragma: no cover - pure-Python fallback
    pa = pc = None

from sevlm.data.report import MAX_EXAMPLES, LoadReport
from sevlm.emotions import EMOTIONS, dominant_emotion

log = logging.getLogger(__name__)

V1_COLUMNS = ("art_style", "painting", "emotion", "utterance", "repetition")
CONTRASTIVE_COLUMNS = ("art_style", "painting", "emotion", "utterance", "anchor_art_style", "anchor_painting")
IMAGE_EXTENSION = ".jpg"
LONG_UTTERANCE_POLICIES = ("drop", "keep")

# Word tokens as nltk.word_tokenize counts them (roughly): runs of word characters and
# single punctuation marks.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_TOKEN_RE2 = r"[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s]"  # the same in RE2 (pyarrow): \w is ASCII there
# Whitespace that " ".join(text.split()) would change: (Python pattern, RE2 pattern).
_WS_CLASS = "\t\n\r\x0b\x0c\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_IRREGULAR_SPACE = (
    rf"  |^ | $|[{_WS_CLASS}]",
    r"  |^ | $|[\t\n\r\x{0b}\x{0c}\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]",
)


class ArtEmisFormatError(ValueError):
    """Input that cannot be used; the message names the file (and rows / column)."""


# ------------------------------------------------------------------------ reading


def _nfc(series: pd.Series) -> pd.Series:
    return series.str.strip().str.normalize("NFC")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def make_painting_id(art_style: str, painting: str) -> str:
    return f"{nfc(art_style.strip())}/{nfc(painting.strip())}"


def _rows(name: str, frame: pd.DataFrame, detail: pd.Series | None = None, limit: int = MAX_EXAMPLES) -> list[str]:
    head = frame.head(limit)
    if detail is None:
        return [f"{name} row {r}" for r in head["row"]]
    return [f"{name} row {r}: {d}" for r, d in zip(head["row"], detail.loc[head.index])]


def _read_frame(path: Path, required: Sequence[str], optional: Sequence[str]) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"ArtEmis CSV not found: {path}")
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ArtEmisFormatError(f"{path}: cannot read the CSV header: {exc}") from None
    columns = [str(c).strip() for c in header.columns]
    missing = [c for c in required if c not in columns]
    if missing:
        raise ArtEmisFormatError(
            f"{path}: missing required column(s) {missing}; found {columns}; "
            f"an ArtEmis CSV needs the columns {list(required)}"
        )
    usecols = [c for c in header.columns if str(c).strip() in (*required, *optional)]
    try:
        frame = pd.read_csv(
            path,
            usecols=usecols,
            dtype={c: "str" for c in usecols},
            keep_default_na=False,  # "None", "NA", "null" are words, not missing values
            na_values=[""],
            encoding="utf-8-sig",
        )
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ArtEmisFormatError(f"{path}: malformed CSV: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    frame["row"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def read_artemis_csv(
    path: str | os.PathLike,
    report: LoadReport,
    *,
    contrastive: bool = False,
    on_unknown_emotion: str = "error",
) -> pd.DataFrame:
    """Read and validate one ArtEmis CSV (v1.0, or v2.0's Contrastive.csv).

    Returns one row per valid annotation with columns ``painting_id, art_style, painting,
    emotion, utterance, repetition, row, source`` (+ ``anchor_id`` for Contrastive.csv).
    Errors and skips are described in the module docstring.
    """
    if on_unknown_emotion not in ("error", "skip"):
        raise ValueError(f"on_unknown_emotion must be 'error' or 'skip', got {on_unknown_emotion!r}")
    path = Path(path)
    name = str(path)
    required = CONTRASTIVE_COLUMNS if contrastive else V1_COLUMNS
    optional = ("repetition",) if contrastive else ()
    frame = _read_frame(path, required, optional)
    report.files.append(name)
    report.rows_read[name] = len(frame)

    # Every check runs on the whole frame; rows are filtered once at the end. A row is
    # counted under the first reason that applies (painting, emotion, utterance).
    for col in ("art_style", "painting"):
        normalised = _nfc(frame[col])
        changed = (normalised != frame[col]) & frame[col].notna()
        report.note("names_normalised_to_nfc", int(changed.sum()))
        frame[col] = normalised
    drop = (frame["art_style"].fillna("") == "") | (frame["painting"].fillna("") == "")
    if drop.any():
        report.skip("missing_painting", int(drop.sum()), _rows(name, frame[drop]))

    emotion = frame["emotion"].str.strip().str.lower()
    unknown = ~emotion.isin(EMOTIONS) & ~drop
    if unknown.any():
        shown = frame.loc[unknown, "emotion"].map(lambda v: repr(None if pd.isna(v) else v))
        examples = _rows(name, frame[unknown], shown, limit=10)
        if on_unknown_emotion == "error":
            raise ArtEmisFormatError(
                f"{name}: unknown emotion label in {int(unknown.sum())} row(s): "
                + "; ".join(examples)
                + f". Expected one of {list(EMOTIONS)}; to skip such rows (counted in the "
                "report): --set data.on_unknown_emotion=skip"
            )
        report.skip("unknown_emotion", int(unknown.sum()), examples)
        drop |= unknown
    frame["emotion"] = emotion

    utterance = normalise_whitespace(frame["utterance"])
    empty = (utterance.fillna("") == "") & ~drop
    if empty.any():
        report.skip("empty_utterance", int(empty.sum()), _rows(name, frame[empty]))
        drop |= empty
    frame["utterance"] = utterance

    # Repetition (optional in Contrastive.csv: the painting's number of rows there).
    if "repetition" in frame.columns:
        repetition = pd.to_numeric(frame["repetition"], errors="coerce")
        bad = repetition.isna() & ~drop
        if bad.any():
            raise ArtEmisFormatError(
                f"{name}: non-numeric or empty 'repetition' in {int(bad.sum())} row(s): "
                + "; ".join(_rows(name, frame[bad], frame.loc[bad, "repetition"].map(repr), 10))
            )
        frame["repetition"] = repetition.fillna(0).astype(np.int32)
    if drop.any():
        frame = frame[~drop]
    frame["painting_id"] = frame["art_style"] + "/" + frame["painting"]
    if "repetition" not in frame.columns:
        frame["repetition"] = frame.groupby("painting_id")["row"].transform("size").astype(np.int32)
    frame["source"] = path.name
    columns = ["painting_id", "art_style", "painting", "emotion", "utterance", "repetition", "row", "source"]
    if contrastive:
        anchor_style = _nfc(frame["anchor_art_style"])
        anchor_painting = _nfc(frame["anchor_painting"])
        frame["anchor_id"] = (anchor_style + "/" + anchor_painting).where(
            anchor_style.notna() & anchor_painting.notna() & (anchor_painting != ""), None
        )
        columns.append("anchor_id")
    return frame[columns].reset_index(drop=True)


def _full_paths(report: LoadReport):
    """File name (the ``source`` column) -> the path as given, for messages."""
    by_name = {Path(f).name: f for f in report.files}
    return lambda name: by_name.get(name, name)


def _duplicates(frame: pd.DataFrame, report: LoadReport) -> np.ndarray:
    """Mask of exact duplicates (same painting, emotion and normalised utterance) after
    their first occurrence; counted in the report with the row they repeat."""
    keys = ["painting_id", "emotion", "utterance"]
    dup = frame.duplicated(subset=keys, keep="first").to_numpy()
    if not dup.any():
        return dup
    involved = frame[frame.duplicated(subset=keys, keep=False)]
    group = involved.groupby(keys, sort=False).ngroup()
    first = involved.groupby(group)[["source", "row"]].transform("first")
    full = _full_paths(report)
    examples = [
        f"{full(frame.at[i, 'source'])} row {frame.at[i, 'row']}: duplicate of "
        f"{full(first.at[i, 'source'])} row {first.at[i, 'row']}"
        for i in frame.index[dup][:MAX_EXAMPLES]
    ]
    report.skip("duplicate_row", int(dup.sum()), examples)
    return dup


def normalise_whitespace(texts: pd.Series) -> pd.Series:
    """``" ".join(text.split())`` (Python's Unicode whitespace), computed only for the rows
    that need it: a pyarrow regex finds them (about 0.2 s for 455k rows)."""
    needs = _matches(texts, _IRREGULAR_SPACE)
    if not needs.any():
        return texts
    out = texts.copy()
    out.loc[needs] = [" ".join(t.split()) for t in texts[needs]]
    return out


def count_word_tokens(utterances: pd.Series) -> pd.Series:
    """Word tokens (``\\w+`` runs and single punctuation marks) of each utterance; pyarrow's
    RE2 kernel when available (the same counts as Python's ``re``, non-ASCII included)."""
    if pc is not None:
        try:
            counts = pc.count_substring_regex(pa.array(utterances), _TOKEN_RE2)
            values = np.asarray(pc.fill_null(counts, 0).to_numpy(zero_copy_only=False), dtype=np.int32)
            return pd.Series(values, index=utterances.index, dtype=np.int32)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
    return pd.Series(
        [len(_TOKEN_RE.findall(t)) if isinstance(t, str) else 0 for t in utterances],
        index=utterances.index,
        dtype=np.int32,
    )


def _matches(texts: pd.Series, pattern: tuple[str, str]) -> np.ndarray:
    """Boolean mask of ``re.search(pattern)`` (NaN -> False), with pyarrow when available."""
    if pc is not None:
        try:
            hits = pc.match_substring_regex(pa.array(texts), pattern[1])
            return np.asarray(pc.fill_null(hits, False).to_numpy(zero_copy_only=False), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
    regex = re.compile(pattern[0])
    return np.fromiter((isinstance(t, str) and regex.search(t) is not None for t in texts), bool, len(texts))


def _length_skips(
    frame: pd.DataFrame, counts: pd.Series, mask: np.ndarray, reason: str, report: LoadReport
) -> None:
    if mask.any():
        full = _full_paths(report)
        examples = [
            f"{full(frame.at[i, 'source'])} row {frame.at[i, 'row']}: {counts[i]} token(s)"
            for i in frame.index[mask][:MAX_EXAMPLES]
        ]
        report.skip(reason, int(mask.sum()), examples)


def _check_anchors(v1: pd.DataFrame, contrastive: pd.DataFrame, report: LoadReport) -> None:
    """Count contrastive rows whose anchor painting is not in the v1 file; refuse when no
    anchor at all is there (that is the wrong v1 file, not a few missing paintings)."""
    v1_name, c_name = _full_paths(report)(v1["source"].iat[0]), _full_paths(report)(contrastive["source"].iat[0])
    no_anchor = contrastive["anchor_id"].isna()
    report.note("contrastive_rows_without_anchor", int(no_anchor.sum()), _rows(c_name, contrastive[no_anchor]))
    named = contrastive[~no_anchor]
    if named.empty:
        return
    present = named["anchor_id"].isin(set(v1["painting_id"]))
    if not present.any():
        raise ArtEmisFormatError(
            f"{c_name}: none of its {named['anchor_id'].nunique()} anchor paintings "
            f"(columns anchor_art_style/anchor_painting, e.g. {named['anchor_id'].iat[0]!r}) is a "
            f"painting of {v1_name}: pass the ArtEmis v1.0 CSV these contrastive annotations "
            "were made for (--artemis-csv)"
        )
    missing = named[~present]
    report.note(
        "contrastive_anchor_missing_from_v1_paintings", int(missing["anchor_id"].nunique()),
        _rows(c_name, missing.drop_duplicates("anchor_id"), "anchor " + missing["anchor_id"] + " is not in " + v1_name),
    )
    report.note("contrastive_rows_with_missing_anchor", len(missing))


def load_artemis(
    csv_path: str | os.PathLike,
    contrastive_csv: str | os.PathLike | None = None,
    *,
    min_tokens: int = 5,
    max_tokens: int = 30,
    long_utterances: str = "drop",
    on_unknown_emotion: str = "error",
    report: LoadReport | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Read ArtEmis v1.0 (and, with ``contrastive_csv``, v2.0 Combined), validated.

    Returns the annotations (see :func:`read_artemis_csv`; ``anchor_id`` is None for v1
    rows, ``contrastive`` marks the rows of ``contrastive_csv``) and the
    :class:`LoadReport`. Duplicates are removed across both files. Utterances shorter than
    ``min_tokens`` word tokens are dropped; longer than ``max_tokens`` are dropped too
    (``long_utterances="drop"``, ArtEmis' own preprocessing) or kept for the tokenizer to
    cut (``"keep"``, the behaviour before DATA_VERSION 3).
    """
    if long_utterances not in LONG_UTTERANCE_POLICIES:
        raise ValueError(f"long_utterances must be one of {LONG_UTTERANCE_POLICIES}, got {long_utterances!r}")
    report = report or LoadReport()
    frames = [read_artemis_csv(csv_path, report, on_unknown_emotion=on_unknown_emotion)]
    frames[0]["contrastive"] = False
    if contrastive_csv is not None:
        frames.append(
            read_artemis_csv(contrastive_csv, report, contrastive=True, on_unknown_emotion=on_unknown_emotion)
        )
        frames[1]["contrastive"] = True
        if len(frames[0]) and len(frames[1]):
            _check_anchors(frames[0], frames[1], report)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if "anchor_id" not in frame.columns:
        frame["anchor_id"] = None
    frame = frame.reset_index(drop=True)
    dup = _duplicates(frame, report)
    counts = count_word_tokens(frame["utterance"])
    short = (counts.to_numpy() < min_tokens) & ~dup
    _length_skips(frame, counts, short, "too_short", report)
    long = (counts.to_numpy() > max_tokens) & ~dup
    if long_utterances == "drop":
        _length_skips(frame, counts, long, "too_long", report)
    else:
        long[:] = False  # kept: cut at the model's token limit, counted there
    keep = ~(dup | short | long)
    if not keep.all():
        frame = frame[keep].reset_index(drop=True)
    if frame.empty:
        raise ArtEmisFormatError(f"{csv_path}: no valid annotation left after validation:\n{report.summary()}")
    report.rows_kept = len(frame)
    return frame, report


def dominant_emotions(frame: pd.DataFrame) -> dict[str, str | None]:
    """painting_id -> dominant emotion (``sevlm.emotions.dominant_emotion``), sorted by id."""
    if frame.empty:
        return {}
    codes, uniques = pd.factorize(frame["painting_id"], sort=True)
    order = np.argsort(codes, kind="stable")
    emotions = frame["emotion"].to_numpy(dtype=object)[order]
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    groups = np.split(emotions, bounds)
    return {pid: dominant_emotion(votes) for pid, votes in zip(uniques.tolist(), groups)}


# ------------------------------------------------------------------------- images


def resolve_image_paths(
    frame: pd.DataFrame, image_dir: str | os.PathLike, extension: str = IMAGE_EXTENSION
) -> tuple[dict[str, Path], dict[str, Path]]:
    """Find ``<image_dir>/<art_style>/<painting><extension>`` for every painting.

    Directory listings are NFC-normalised, so a file stored under its NFD name (or an NFD
    name in the CSV, normalised on reading) is found. Returns (found, missing), both
    painting_id -> path (the expected path for missing ones).
    """
    root = Path(image_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"image directory not found: {root} (set data.image_dir / --image-dir)")
    styles = {nfc(entry.name): entry.name for entry in os.scandir(root) if entry.is_dir()}
    pairs = frame[["painting_id", "art_style", "painting"]].drop_duplicates("painting_id")
    found: dict[str, Path] = {}
    missing: dict[str, Path] = {}
    listings: dict[str, dict[str, str]] = {}
    for pid, style, painting in sorted(zip(pairs["painting_id"], pairs["art_style"], pairs["painting"])):
        style_dir = styles.get(style)
        if style_dir is None:
            missing[pid] = root / style / f"{painting}{extension}"
            continue
        listing = listings.get(style)
        if listing is None:
            listing = {nfc(e.name): e.name for e in os.scandir(root / style_dir) if e.is_file()}
            listings[style] = listing
        filename = listing.get(f"{painting}{extension}")
        if filename is None:
            missing[pid] = root / style_dir / f"{painting}{extension}"
        else:
            found[pid] = root / style_dir / filename
    return found, missing
