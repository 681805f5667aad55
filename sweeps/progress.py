"""The console table of a running sweep, the number and table formatting it shares with the
summary, and the words both use for what became of a trial."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback
from ray.tune.result import DONE

from trainables.report_protocol import KEY_STEP, is_final
from trainables.tracking_schema import EPOCH_METRIC


# What became of a trial, in the words of the table and the summary. Tune's own statuses
# say TERMINATED for a finished trial, one that ASHA stopped and one that an interrupted
# sweep stopped or never started alike.
FINISHED = "finished"  # its final report (test metrics) arrived
FAILED = "failed"  # out of retries
STOPPED_EARLY = "stopped early"  # the scheduler (ASHA) ended it
INTERRUPTED = "interrupted"  # the sweep stopped it after its first evaluation: --resume continues it
NOT_STARTED = "not started"  # no evaluation yet when the sweep stopped: --resume starts it


def trial_state(last_result: dict | None, *, ended: bool, failed: bool) -> str:
    """``last_result``: the trial's last report; ``ended``: it returned or the scheduler
    stopped it (Tune's ``done``); ``failed``: it ran out of retries."""
    if failed:
        return FAILED
    if last_result and is_final(last_result):
        return FINISHED
    if ended:
        return STOPPED_EARLY
    return INTERRUPTED if last_result and KEY_STEP in last_result else NOT_STARTED


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
    trial's highest validation value so far (every metric is higher-is-better). A trial's
    status is Tune's while it is pending or running, then what became of it
    (:func:`trial_state`); the last table of an interrupted sweep counts the trials the
    searcher had not created yet as not started.
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
        self.ended: dict[str, str] = {}  # trial id -> FINISHED, STOPPED_EARLY or FAILED

    # Tune pickles callbacks into its experiment state (for --resume); not the stream.
    def __getstate__(self):
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state):
        state.setdefault("ended", {})
        self.__dict__.update(state)
        self.start = time.monotonic()
        self.last = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value) and not is_final(result):
            self.best[trial.trial_id] = max(value, self.best.get(trial.trial_id, value))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = trial_state(trial.last_result, ended=True, failed=False)
        self.print(trials, f"trial {trial.trial_id} ended")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = FAILED
        self.print(trials, f"trial {trial.trial_id} failed")

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last >= self.interval:
            self.print(trials)

    def on_experiment_end(self, trials, **info):
        # Every trial has ended unless the sweep was interrupted (Tune then calls the
        # stopped and the never-started ones TERMINATED too).
        if all(self._has_ended(t) for t in trials) and len(trials) >= self.total_trials:
            self.print(trials, "sweep ended")
        else:
            self.print(trials, "sweep interrupted", interrupted=True)

    def _has_ended(self, trial) -> bool:
        # Tune marks the last report of a trial that returned or that the scheduler
        # stopped "done" (also for one that ended under an earlier driver of the sweep).
        return trial.trial_id in self.ended or bool((trial.last_result or {}).get(DONE))

    def status(self, trial, interrupted: bool) -> str:
        if trial.trial_id in self.ended:
            return self.ended[trial.trial_id]
        last = trial.last_result or {}
        if self._has_ended(trial) or interrupted:
            return trial_state(last, ended=self._has_ended(trial), failed=trial.status == "ERROR")
        return str(trial.status).lower()

    def print(self, trials, note: str = "", interrupted: bool = False):
        self.last = time.monotonic()
        elapsed = time.monotonic() - self.start
        status = {t.trial_id: self.status(t, interrupted) for t in trials}
        counts: dict[str, int] = {}
        for t in trials:
            counts[status[t.trial_id]] = counts.get(status[t.trial_id], 0) + 1
        if interrupted and len(trials) < self.total_trials:  # not created by the searcher yet
            counts[NOT_STARTED] = counts.get(NOT_STARTED, 0) + self.total_trials - len(trials)
        head = f"== {self.name}: {len(trials)}/{self.total_trials} trials (" + ", ".join(
            f"{n} {s}" for s, n in sorted(counts.items())
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
