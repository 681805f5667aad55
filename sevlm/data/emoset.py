"""Reading EmoSet (Yang et al., ICCV 2023) for held-out evaluation: split files and images.

Layout (``<root>`` is the unpacked EmoSet-118K folder)::

    <root>/train.json, val.json, test.json   one JSON list per split
    <root>/image/<emotion>/<emotion>_NNNNN.jpg
    <root>/annotation/<emotion>/<emotion>_NNNNN.json   (attributes; not read here)
    <root>/info.json                                   (label <-> index maps; not read)

Each entry of a split file is ``[emotion, image path, annotation path]`` (REFERENCE.md §6)
or, as EmoSet's own README shows it, ``[emotion, image id, image path, annotation path]``;
both are read. Paths are relative to ``<root>``. The emotion classes are the eight Mikels
emotions, i.e. ArtEmis' without "something else" (:data:`EMOSET_EMOTIONS`, derived from
:data:`sevlm.emotions.EMOTIONS` in its order, which is also EmoSet's ``label2idx`` order).

Bad input follows the ArtEmis reader's rules (tested in ``tests/test_emoset.py``);
"entry N" is the 0-based position in the split file's list:

=============================  ===========================================================
case                           decision
=============================  ===========================================================
split file missing             ``FileNotFoundError`` naming the file
not JSON / not a list          :class:`EmoSetFormatError` naming the file (and JSON error)
malformed entry                :class:`EmoSetFormatError` naming the file, entries and why
                               (not a list of 3 or 4 strings, empty image path, a path
                               that leaves the dataset folder)
unknown emotion label          :class:`EmoSetFormatError` naming the file, entries and
                               values (``on_unknown_emotion="skip"``: counted skip)
image listed twice             counted skip ``duplicate_image``, the first entry is kept
missing image file             counted skip ``missing_image``; an error if none is found
corrupt image file             counted skip ``corrupt_image`` at the feature-cache stage
                               (:mod:`sevlm.data.feature_cache`, reported by the evaluation)
=============================  ===========================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sevlm.data.report import LoadReport
from sevlm.emotions import EMOTIONS

# EmoSet's eight classes: every ArtEmis emotion except the catch-all "something else".
EMOSET_EMOTIONS: tuple[str, ...] = tuple(e for e in EMOTIONS if e != "something else")
EMOSET_SPLITS = ("train", "val", "test")
MAX_SHOWN = 10  # offending entries named in one error message


class EmoSetFormatError(ValueError):
    """Input that cannot be used; the message names the file and the entries."""


class EmoSetLoadReport(LoadReport):
    """:class:`~sevlm.data.report.LoadReport` (skips counted by reason, with examples)
    with an EmoSet summary line."""

    def summary(self) -> str:
        lines = [
            "EmoSet load report: "
            + ", ".join(f"{Path(f).name}: {n} entries" for f, n in self.rows_read.items())
            + f"; {self.rows_kept} images kept"
        ]
        for reason in sorted(self.skips):
            lines.append(f"  skipped {reason}: {self.skips[reason]}")
            lines.extend(f"    e.g. {example}" for example in self.examples.get(reason, []))
        lines.extend(f"  note {name}: {self.notes[name]}" for name in sorted(self.notes))
        return "\n".join(lines)


@dataclass(frozen=True)
class EmoSetImage:
    key: str  # the image path relative to the root ("image/awe/awe_00012.jpg"): unique
    emotion: str  # one of EMOSET_EMOTIONS
    path: Path  # the image file
    annotation: str  # relative annotation path, as listed
    entry: int  # position in the split file


@dataclass
class EmoSetSplit:
    name: str
    root: Path
    images: list[EmoSetImage]  # in split-file order, each image once, every file present
    report: EmoSetLoadReport

    def __len__(self) -> int:
        return len(self.images)

    def image_paths(self) -> dict[str, Path]:
        """key -> file, the mapping the feature cache takes."""
        return {image.key: image.path for image in self.images}

    def labels(self) -> dict[str, str]:
        return {image.key: image.emotion for image in self.images}


def split_file(root: str | os.PathLike, split: str) -> Path:
    if split not in EMOSET_SPLITS:
        raise ValueError(f"unknown EmoSet split {split!r}; choose one of {EMOSET_SPLITS}")
    return Path(root) / f"{split}.json"


def read_split_entries(path: Path) -> list:
    """The raw JSON list of a split file; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"EmoSet split file not found: {path} (expected <emoset dir>/{path.name})")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise EmoSetFormatError(f"{path}: not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise EmoSetFormatError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(entries, list):
        raise EmoSetFormatError(
            f"{path}: expected a JSON list of [emotion, image path, annotation path] entries, "
            f"got a {type(entries).__name__}"
        )
    return entries


def _parse_entry(entry) -> tuple[str, str, str] | str:
    """(emotion, image path, annotation path), or why the entry is malformed."""
    if not isinstance(entry, list) or len(entry) not in (3, 4):
        return "expected a list [emotion, image path, annotation path] (or with an image id second)"
    if not all(isinstance(x, str) for x in entry):
        return "every field must be a string"
    emotion, image, annotation = entry[0], entry[-2], entry[-1]
    relative = PurePosixPath(image.strip())
    if not image.strip():
        return "empty image path"
    if relative.is_absolute() or ".." in relative.parts:
        return f"image path {image!r} must stay inside the dataset folder"
    return emotion, str(relative), annotation


def _shown(path: Path, problems: Sequence[tuple[int, str]]) -> str:
    listed = "; ".join(f"entry {i}: {why}" for i, why in problems[:MAX_SHOWN])
    more = f" (and {len(problems) - MAX_SHOWN} more)" if len(problems) > MAX_SHOWN else ""
    return f"{path}: {listed}{more}"


def load_emoset(
    root: str | os.PathLike, split: str = "test", *, on_unknown_emotion: str = "error"
) -> EmoSetSplit:
    """Read and validate one EmoSet split; see the module docstring for the rules."""
    if on_unknown_emotion not in ("error", "skip"):
        raise ValueError(f"on_unknown_emotion must be 'error' or 'skip', got {on_unknown_emotion!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"EmoSet directory not found: {root}")
    path = split_file(root, split)
    entries = read_split_entries(path)
    report = EmoSetLoadReport(files=[str(path)], rows_read={str(path): len(entries)})

    parsed = [(i, _parse_entry(e)) for i, e in enumerate(entries)]
    malformed = [(i, p) for i, p in parsed if isinstance(p, str)]
    if malformed:
        raise EmoSetFormatError(f"malformed entries ({len(malformed)}): " + _shown(path, malformed))
    valid = [(i, p) for i, p in parsed if not isinstance(p, str)]

    unknown = [(i, f"unknown emotion {p[0]!r}") for i, p in valid if p[0].strip().lower() not in EMOSET_EMOTIONS]
    if unknown and on_unknown_emotion == "error":
        raise EmoSetFormatError(
            f"unknown emotion label in {len(unknown)} entries: " + _shown(path, unknown)
            + f". Expected one of {list(EMOSET_EMOTIONS)}"
        )
    report.skip("unknown_emotion", len(unknown), [f"{path} entry {i}: {why}" for i, why in unknown])
    skipped = {i for i, _ in unknown}

    images: list[EmoSetImage] = []
    seen: dict[str, int] = {}
    for i, (emotion, image, annotation) in valid:
        if i in skipped:
            continue
        if image in seen:
            report.skip("duplicate_image", 1, [f"{path} entry {i}: {image} (first listed at entry {seen[image]})"])
            continue
        seen[image] = i
        file = root / image
        if not file.is_file():
            report.skip("missing_image", 1, [f"{path} entry {i}: {file}"])
            continue
        images.append(EmoSetImage(image, emotion.strip().lower(), file, annotation, i))
    if not images:
        raise EmoSetFormatError(f"{path}: no usable image in the {split} split:\n{report.summary()}")
    report.rows_kept = len(images)
    return EmoSetSplit(split, root, images, report)


__all__ = [
    "EMOSET_EMOTIONS",
    "EMOSET_SPLITS",
    "EmoSetFormatError",
    "EmoSetImage",
    "EmoSetLoadReport",
    "EmoSetSplit",
    "load_emoset",
    "read_split_entries",
    "split_file",
]
