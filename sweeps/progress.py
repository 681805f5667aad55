"""The console table of a running sweep, and the number and table formatting it shares
with the summary."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback

from trainables.report_protocol import KEY_STEP, is_final
from trainables.tracking_schema import EPOCH_METRIC


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


class ProgressTable(Callback):
    """Prints a table of every trial every ``interval`` seconds and when one ends.

    ``columns``: Tune config key -> header (the strategy's). The "best" column is each
    trial's highest validation value so far (every metric is higher-is-better).
    """

    def __init__(self, name: str, total_trials: int, columns: dict[str, str], metric: str,
                 interval: float, stream=None):
        self.name = name
        self.total_trials = total_trials
        self.columns = columns
        self.metric = metric
        self.interval = interval
        self.stream = stream
        self.last = 0.0
        self.start = time.monotonic()
        self.best: dict[str, float] = {}

    # Tune pickles callbacks into its experiment state (for --resume); not the stream.
    def __getstate__(self):
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.start = time.monotonic()
        self.last = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value) and not is_final(result):
            self.best[trial.trial_id] = max(value, self.best.get(trial.trial_id, value))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.print(trials, f"trial {trial.trial_id} ended", {trial.trial_id: "TERMINATED"})

    def on_trial_error(self, iteration, trials, trial, **info):
        self.print(trials, f"trial {trial.trial_id} failed", {trial.trial_id: "ERROR"})

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last >= self.interval:
            self.print(trials)

    def on_experiment_end(self, trials, **info):
        self.print(trials, "sweep ended")

    def print(self, trials, note: str = "", status: dict[str, str] | None = None):
        self.last = time.monotonic()
        elapsed = time.monotonic() - self.start
        status = {t.trial_id: (status or {}).get(t.trial_id, t.status) for t in trials}
        counts: dict[str, int] = {}
        for t in trials:
            counts[status[t.trial_id]] = counts.get(status[t.trial_id], 0) + 1
        head = f"== {self.name}: {len(trials)}/{self.total_trials} trials (" + ", ".join(
            f"{n} {s.lower()}" for s, n in sorted(counts.items())
        ) + f") | {elapsed / 60:.1f} min" + (f" | {note}" if note else "")
        header = ["trial", "status"] + list(self.columns.values()) + ["epoch", "step", self.metric, "best"]
        rows = []
        for t in trials:
            r = t.last_result or {}
            rows.append(
                [t.trial_id, status[t.trial_id]]
                + [fmt(t.config.get(k)) for k in self.columns]
                + [fmt(r.get(EPOCH_METRIC)), fmt(r.get(KEY_STEP)), fmt(r.get(self.metric)),
                   fmt(self.best.get(t.trial_id))]
            )
        print(head + "\n" + format_table(rows, header) + "\n", file=self.stream or sys.stdout, flush=True)
