"""The load report: what happened to the user's data, and how it reaches them.

Skips, drops, truncations and fall-backs used to be logged only, which in a Ray sweep means
a worker log nobody reads. The report now leaves a run in three ways:

- ``data_report.json`` in the run folder (:meth:`LoadReport.write_json`);
- the trial's MLflow params, every count under :data:`PARAM_PREFIX`
  (:meth:`LoadReport.params`; the prefix is ``sevlm.names.DATA_REPORT_PARAM_PREFIX``, which
  ``trainables.tracking_schema`` imports);
- a summary printed by ``python -m sevlm.train`` (:meth:`LoadReport.summary`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sevlm.names import DATA_REPORT_FILE, DATA_REPORT_PARAM_PREFIX

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REST = "rest"
MAX_EXAMPLES = 5  # examples kept per skip reason in the report
# The report's file in a run folder, and the prefix of its MLflow params ("data.report.rows_kept",
# "data.report.skipped.too_long", "data.report.note.<name>",
# "data.report.split.<split>.paintings" / ".annotations"): named in sevlm.names.
REPORT_FILE = DATA_REPORT_FILE
PARAM_PREFIX = DATA_REPORT_PARAM_PREFIX


@dataclass
class LoadReport:
    """What loading did: rows read and kept, and every skip counted by reason.

    ``skips[reason]`` counts removed rows (or paintings for ``missing_image`` /
    ``corrupt_image``); ``examples[reason]`` keeps the first few as ``"<file> row N: ..."``
    (or the image path). ``notes`` are informational counts that removed nothing (names
    normalised to NFC, sentences cut at the token limit, negative fall-backs...);
    ``note_examples`` keeps the first few of some of them.
    """

    files: list[str] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_kept: int = 0
    skips: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    note_examples: dict[str, list[str]] = field(default_factory=dict)
    split_paintings: dict[str, int] = field(default_factory=dict)
    split_annotations: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, count: int, examples: Iterable[str] = ()) -> None:
        if count <= 0:
            return
        self.skips[reason] = self.skips.get(reason, 0) + int(count)
        _keep_examples(self.examples.setdefault(reason, []), examples)

    def note(self, name: str, count: int, examples: Iterable[str] = ()) -> None:
        self.notes[name] = self.notes.get(name, 0) + int(count)
        examples = list(examples)
        if count > 0 and examples:
            _keep_examples(self.note_examples.setdefault(name, []), examples)

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
            lines.extend(f"    e.g. {example}" for example in self.examples.get(reason, []))
        for name in sorted(self.notes):
            lines.append(f"  note {name}: {self.notes[name]}")
            lines.extend(f"    e.g. {example}" for example in self.note_examples.get(name, []))
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
            "note_examples": {k: list(v) for k, v in self.note_examples.items()},
            "split_paintings": dict(self.split_paintings),
            "split_annotations": dict(self.split_annotations),
        }

    @classmethod
    def from_dict(cls, data: dict) -> LoadReport:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def write_json(self, directory: str | os.PathLike) -> Path:
        """``<directory>/data_report.json`` (written atomically: a reader never sees half)."""
        path = Path(directory) / REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def params(self) -> dict[str, int]:
        """Every count as a flat MLflow param under :data:`PARAM_PREFIX` (examples stay in
        the JSON file: MLflow params are short strings)."""
        out = {
            f"{PARAM_PREFIX}rows_read": sum(self.rows_read.values()),
            f"{PARAM_PREFIX}rows_kept": self.rows_kept,
        }
        out |= {f"{PARAM_PREFIX}skipped.{k}": v for k, v in sorted(self.skips.items())}
        out |= {f"{PARAM_PREFIX}note.{k}": v for k, v in sorted(self.notes.items())}
        for split, n in sorted(self.split_paintings.items()):
            out[f"{PARAM_PREFIX}split.{split}.paintings"] = n
            out[f"{PARAM_PREFIX}split.{split}.annotations"] = self.split_annotations.get(split, 0)
        return out


def read_report(directory: str | os.PathLike) -> LoadReport | None:
    """The report a run wrote into ``directory``, or None if it wrote none."""
    path = Path(directory) / REPORT_FILE
    if not path.is_file():
        return None
    return LoadReport.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _keep_examples(kept: list[str], examples: Iterable[str]) -> None:
    for example in examples:
        if len(kept) >= MAX_EXAMPLES:
            break
        kept.append(example)
