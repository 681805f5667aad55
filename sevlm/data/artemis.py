"""Reading, validating and splitting ArtEmis annotations (v1.0 and v2.0 "Combined").

Formats
-------
- v1.0 ``artemis_dataset_release_v0.csv``: columns ``art_style, painting, emotion,
  utterance, repetition`` (extra columns are ignored).
- v2.0 ``Contrastive.csv``: the same columns plus ``anchor_art_style, anchor_painting``
  (``repetition`` may be absent there: it is then the painting's number of rows in that
  file). v2.0 "Combined" = v1.0 + Contrastive.csv; every anchor painting goes to train.
- Images (WikiArt layout): ``<image_dir>/<art_style>/<painting>.jpg``.

A painting is identified by ``painting_id = "<art_style>/<painting>"`` with both parts in
Unicode NFC. WikiArt names may be non-ASCII and the same name can reach us in NFC (most
CSVs) or NFD (files copied through macOS); :func:`resolve_image_paths` matches image files by
NFC-normalising the directory listings, so both spellings find the same file.

Preprocessing (ArtEmis' ``preprocess_artemis_data.py --preprocess-for-deep-nets``, with the
fixes of REFERENCE.md):

1. Paintings with ``repetition > max_repetition`` (40) go to the "rest" split.
2. The remaining paintings are split 85/5/10 **by painting**: the sorted unique painting ids
   are permuted with ``numpy.random.default_rng(split_seed)``; no Python ``set`` iteration
   order is involved, so the split is the same on every machine and Python version. For v2,
   anchor paintings are forced into train and the val/test sizes are fractions of all
   split paintings.
3. Utterances with fewer than ``min_tokens`` (5) word tokens (``\\w+`` runs and single
   punctuation marks, like ``nltk.word_tokenize``) are dropped (counted skip). Longer ones
   are **kept** and cut to the model length by the tokenizer (``max_tokens`` only counts
   them in the report).

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
too short utterance            counted skip ``too_short``
NFC vs NFD painting names      normalised to NFC (counted as a note), images found either way
missing image file             counted skip ``missing_image``: the painting (all its rows)
                               is excluded; an error if no image at all is found
corrupt image file             counted skip ``corrupt_image`` at the feature-cache stage
                               (see :mod:`sevlm.data.feature_cache`), painting excluded
=============================  ===========================================================

Everything is vectorised pandas (explicit string dtypes): the 455k-row v1.0 file loads,
validates and splits in a few seconds (see ``benchmarks/bench_data.py``).
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

try:  # fast vectorised string kernels (pandas 3 stores strings in pyarrow when installed)
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError:  # pragma: no cover - pure-Python fallback
    pa = pc = None

from sevlm.emotions import EMOTIONS, dominant_emotion

log = logging.getLogger(__name__)

V1_COLUMNS = ("art_style", "painting", "emotion", "utterance", "repetition")
CONTRASTIVE_COLUMNS = ("art_style", "painting", "emotion", "utterance", "anchor_art_style", "anchor_painting")
SPLITS = ("train", "val", "test")
REST = "rest"
IMAGE_EXTENSION = ".jpg"
MAX_EXAMPLES = 5  # examples kept per skip reason in the report

# Word tokens as nltk.word_tokenize counts them (roughly): runs of word characters and
# single punctuation marks.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# Whitespace that " ".join(text.split()) would change: (Python pattern, RE2 pattern).
_WS_CLASS = "\t\n\r\x0b\x0c\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_IRREGULAR_SPACE = (
    rf"  |^ | $|[{_WS_CLASS}]",
    r"  |^ | $|[\t\n\r\x{0b}\x{0c}\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]",
)


class ArtEmisFormatError(ValueError):
    """Input that cannot be used; the message names the file (and rows / column)."""


# ----------------------------------------------------------------------------- report


@dataclass
class LoadReport:
    """What loading did: rows read and kept, and every skip counted by reason.

    ``skips[reason]`` counts skipped rows (or paintings for ``missing_image`` /
    ``corrupt_image``); ``examples[reason]`` keeps the first few as ``"<file> row N: ..."``
    (or the image path). ``notes`` are informational counts that removed nothing
    (names normalised to NFC, long utterances cut by the tokenizer, negative fallbacks...).
    """

    files: list[str] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_kept: int = 0
    skips: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    split_paintings: dict[str, int] = field(default_factory=dict)
    split_annotations: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, count: int, examples: Iterable[str] = ()) -> None:
        if count <= 0:
            return
        self.skips[reason] = self.skips.get(reason, 0) + int(count)
        kept = self.examples.setdefault(reason, [])
        for example in examples:
            if len(kept) >= MAX_EXAMPLES:
                break
            kept.append(example)

    def note(self, name: str, count: int) -> None:
        self.notes[name] = self.notes.get(name, 0) + int(count)

    @property
    def total_skipped(self) -> int:
        return sum(self.skips.values())

    def summary(self) -> str:
        lines = [
            "ArtEmis load report: "
            + ", ".join(f"{Path(f).name}: {n} rows" for f, n in self.rows_read.items())
            + f"; {self.rows_kept} annotations kept"
        ]
        if self.split_paintings:
            lines.append(
                "  split (paintings / annotations): "
                + ", ".join(
                    f"{s} {self.split_paintings.get(s, 0)}/{self.split_annotations.get(s, 0)}"
                    for s in (*SPLITS, REST)
                    if s in self.split_paintings
                )
            )
        for reason in sorted(self.skips):
            lines.append(f"  skipped {reason}: {self.skips[reason]}")
            for example in self.examples.get(reason, []):
                lines.append(f"    e.g. {example}")
        for name in sorted(self.notes):
            lines.append(f"  note {name}: {self.notes[name]}")
        return "\n".join(lines)

    def log(self, logger: logging.Logger | None = None) -> None:
        logger = logger or log
        level = logging.WARNING if self.skips else logging.INFO
        logger.log(level, "%s", self.summary())

    def to_dict(self) -> dict:
        return {
            "files": list(self.files),
            "rows_read": dict(self.rows_read),
            "rows_kept": self.rows_kept,
            "skips": dict(self.skips),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "notes": dict(self.notes),
            "split_paintings": dict(self.split_paintings),
            "split_annotations": dict(self.split_annotations),
        }


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
                + f". Expected one of {list(EMOTIONS)}"
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
    """Word tokens (``\\w+`` runs and single punctuation marks) of each utterance."""
    return pd.Series(
        [len(_TOKEN_RE.findall(t)) for t in utterances], index=utterances.index, dtype=np.int32
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


def _space_counts(texts: pd.Series) -> np.ndarray:
    if pc is not None:
        try:
            counts = pc.count_substring(pa.array(texts), " ")
            return np.asarray(pc.fill_null(counts, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
    return np.fromiter((t.count(" ") for t in texts), np.int64, len(texts))


def _short_utterances(utterances: pd.Series, min_tokens: int) -> tuple[np.ndarray, pd.Series]:
    """Mask of utterances with fewer than ``min_tokens`` word tokens, and their counts.

    Every whitespace-separated word holds at least one token, so only utterances with
    fewer than ``min_tokens`` words need the (slow, exact) token count.
    """
    words = _space_counts(utterances) + 1
    candidates = words < min_tokens
    counts = count_word_tokens(utterances[candidates])
    short = np.zeros(len(utterances), dtype=bool)
    short[np.flatnonzero(candidates)[counts.to_numpy() < min_tokens]] = True
    return short, counts


def load_artemis(
    csv_path: str | os.PathLike,
    contrastive_csv: str | os.PathLike | None = None,
    *,
    min_tokens: int = 5,
    max_tokens: int = 30,
    on_unknown_emotion: str = "error",
    report: LoadReport | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Read ArtEmis v1.0 (and, with ``contrastive_csv``, v2.0 Combined), validated.

    Returns the annotations (see :func:`read_artemis_csv`; ``anchor_id`` is None for v1
    rows) and the :class:`LoadReport`. Duplicates are removed across both files.
    """
    report = report or LoadReport()
    frames = [read_artemis_csv(csv_path, report, on_unknown_emotion=on_unknown_emotion)]
    if contrastive_csv is not None:
        frames.append(
            read_artemis_csv(contrastive_csv, report, contrastive=True, on_unknown_emotion=on_unknown_emotion)
        )
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if "anchor_id" not in frame.columns:
        frame["anchor_id"] = None
    frame = frame.reset_index(drop=True)
    dup = _duplicates(frame, report)
    short, counts = _short_utterances(frame["utterance"], min_tokens)
    short &= ~dup
    if short.any():
        shown = frame.index[short][:MAX_EXAMPLES]
        full = _full_paths(report)
        examples = [f"{full(frame.at[i, 'source'])} row {frame.at[i, 'row']}: {counts[i]} token(s)" for i in shown]
        report.skip("too_short", int(short.sum()), examples)
    keep = ~(dup | short)
    # Long utterances are kept (the tokenizer cuts them to the model length); count them.
    long = _space_counts(frame["utterance"]) + 1 > max_tokens
    report.note(f"longer_than_{max_tokens}_words_kept", int((long & keep).sum()))
    if not keep.all():
        frame = frame[keep].reset_index(drop=True)
    if frame.empty:
        raise ArtEmisFormatError(f"{csv_path}: no valid annotation left after validation:\n{report.summary()}")
    report.rows_kept = len(frame)
    return frame, report


def anchor_ids(frame: pd.DataFrame) -> list[str]:
    """Sorted ids of the v2 anchor paintings."""
    if "anchor_id" not in frame.columns:
        return []
    return sorted(frame["anchor_id"].dropna().unique().tolist())


# -------------------------------------------------------------------------- split


def split_paintings(
    frame: pd.DataFrame,
    *,
    seed: int = 2021,
    fractions: Sequence[float] = (0.85, 0.05, 0.10),
    max_repetition: int = 40,
    anchors: Iterable[str] = (),
) -> pd.Series:
    """Deterministic split by painting: a Series painting_id -> "train"/"val"/"test"/"rest".

    Sorted unique painting ids (numpy sort, not a set), paintings with a repetition above
    ``max_repetition`` set aside as "rest", anchors forced into train, the others permuted
    with ``default_rng(seed)``: the first ``round(f_val * n)`` go to val, the next
    ``round(f_test * n)`` to test, the rest to train (``n`` counts all non-rest paintings).
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    repetition = frame.groupby("painting_id", sort=True)["repetition"].max()
    ids = repetition.index.to_numpy(dtype=object)
    anchor_set = set(anchors)
    is_anchor = np.fromiter((i in anchor_set for i in ids), dtype=bool, count=len(ids))
    is_rest = (repetition.to_numpy() > max_repetition) & ~is_anchor
    split = np.full(len(ids), "train", dtype=object)
    split[is_rest] = REST
    candidates = np.flatnonzero(~is_rest & ~is_anchor)
    n = int((~is_rest).sum())
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n_val + n_test > len(candidates):
        scale = len(candidates) / max(1, n_val + n_test)
        n_val, n_test = int(n_val * scale), len(candidates) - int(n_val * scale)
    order = candidates[np.random.default_rng(seed).permutation(len(candidates))]
    split[order[:n_val]] = "val"
    split[order[n_val : n_val + n_test]] = "test"
    return pd.Series(split, index=pd.Index(ids, name="painting_id"), name="split")


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
