"""The outcome of a sweep, computed once from the ``ResultGrid`` that ``tuner.fit()``
returns, and its printing.

A trial FINISHED when its final report (test metrics) arrived, FAILED when it ran out of
retries, and was KILLED otherwise (stopped by ASHA, or the sweep was interrupted); the
console says which (``sweeps.progress.trial_state``: stopped early, interrupted, not
started). The best
trial is the one with the highest value of the sweep's metric, a trial's value being the
highest it reported (the value of the checkpoint it was tested with): every metric is
higher-is-better.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps import progress
from sweeps.progress import fmt
from trainables import tracking_schema as schema
from trainables.mlflow_store import ui_command, ui_url
from trainables.node_checks import error_summary
from trainables.report_protocol import TrialReport, is_final


@dataclass
class TrialOutcome:
    trial_id: str
    status: str  # schema.STATUS_FINISHED, STATUS_FAILED or STATUS_KILLED
    config: dict[str, Any]
    value: float | None  # the trial's value of the sweep's metric
    final: dict[str, float] = field(default_factory=dict)  # final metrics (finished trials)
    error: str | None = None
    state: str | None = None  # what became of it, in the console's words (sweeps.progress)

    def __post_init__(self):
        if self.state is None:  # from the MLflow status where nothing finer is known
            self.state = {schema.STATUS_FINISHED: progress.FINISHED, schema.STATUS_FAILED: progress.FAILED}.get(
                self.status, progress.INTERRUPTED)


@dataclass
class SweepOutcome:
    metric: str
    trials: list[TrialOutcome]
    interrupted: bool  # trials left to run: --resume continues the sweep
    total_trials: int | None = None  # the sweep's planned trials (some may not exist yet)

    @property
    def counts(self) -> dict[str, int]:
        """The MLflow statuses (total, finished, failed, killed: the parent run's tags) and
        what became of the trials (stopped_early, interrupted, not_started: the console's).
        ``total`` counts the trials Tune created; ``planned`` those the sweep has."""
        statuses = [t.status for t in self.trials]
        states = [t.state for t in self.trials]
        planned = max(self.total_trials or 0, len(self.trials))
        return {
            "total": len(statuses),
            "finished": statuses.count(schema.STATUS_FINISHED),
            "failed": statuses.count(schema.STATUS_FAILED),
            "killed": statuses.count(schema.STATUS_KILLED),
            "planned": planned,
            "stopped_early": states.count(progress.STOPPED_EARLY),
            "interrupted": states.count(progress.INTERRUPTED),
            "not_started": states.count(progress.NOT_STARTED) + planned - len(self.trials),
        }

    @property
    def best(self) -> TrialOutcome | None:
        valued = [t for t in self.trials if t.value is not None]
        return max(valued, key=lambda t: t.value) if valued else None

    @property
    def status(self) -> str:
        """The MLflow status of the sweep's parent run."""
        counts = self.counts
        if self.interrupted:
            return schema.STATUS_KILLED
        if counts["finished"] == 0 and counts["failed"] > 0:
            return schema.STATUS_FAILED
        return schema.STATUS_FINISHED

    def best_record(self, sweep_name: str, run_ids: dict[str, str]) -> dict[str, Any] | None:
        best = self.best
        if best is None:
            return None
        return {
            "trial_id": best.trial_id,
            "run_id": run_ids.get(best.trial_id),
            "run_name": schema.trial_run_name(sweep_name, best.trial_id),
            "config": best.config,
            "metrics": {self.metric: best.value, **best.final},
        }

    def rows(self, run_ids: dict[str, str]) -> list[dict[str, Any]]:
        """One row per trial: its config, status, MLflow run, value and test metrics."""
        keys = sorted({k for t in self.trials for k in t.config})
        rows = []
        for t in self.trials:
            row = {"trial_id": t.trial_id, "status": t.status, "state": t.state, "run_id": run_ids.get(t.trial_id, "")}
            row.update({k: t.config.get(k) for k in keys})
            row[self.metric] = t.value
            row.update({k: v for k, v in sorted(t.final.items()) if k.startswith(schema.TEST_PREFIX)})
            rows.append(row)
        return rows


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_value(result, metric: str) -> float | None:
    """The highest finite value of ``metric`` in a trial's reports."""
    values = []
    frame = result.metrics_dataframe
    if frame is not None and metric in frame:
        values = [float(v) for v in frame[metric] if _finite(v)]
    last = (result.metrics or {}).get(metric)
    if _finite(last):
        values.append(float(last))
    return max(values) if values else None


def sweep_outcome(results, metric: str, total_trials: int) -> SweepOutcome:
    """From ``tuner.fit()``'s ResultGrid (``total_trials``: how many the sweep has).

    Tune marks the last result of a trial that ended (it returned, or the scheduler stopped
    it) ``done``; an interrupted sweep leaves trials that neither ended nor failed, or
    never created them: those are left for ``--resume``.
    """
    from ray.tune.result import DONE

    trials = []
    unfinished = 0
    for result in results:
        last = result.metrics or {}
        final = is_final(last)
        if result.error is not None:
            status = schema.STATUS_FAILED
        else:
            status = schema.STATUS_FINISHED if final else schema.STATUS_KILLED
        state = progress.trial_state(last, ended=last.get(DONE) is True, failed=result.error is not None)
        error = error_summary(str(result.error), 800) if result.error is not None else None
        # A trial restored by --resume after its final report may come back without DONE.
        unfinished += result.error is None and not final and last.get(DONE) is not True
        trials.append(TrialOutcome(
            trial_id=str(last.get("trial_id")),
            status=status,
            config=dict(result.config or {}),
            value=trial_value(result, metric),
            final=TrialReport.from_result(last).metrics if final else {},
            error=error,
            state=state,
        ))
    return SweepOutcome(metric, trials, interrupted=bool(unfinished) or len(trials) < total_trials,
                        total_trials=total_trials)


# -------------------------------------------------------------------------- printing


def print_counts(name: str, outcome: SweepOutcome, out) -> None:
    c = outcome.counts
    parts = [f"{c['finished']} finished", f"{c['failed']} failed"]
    parts += [f"{c[key]} {words}" for key, words in (("stopped_early", progress.STOPPED_EARLY),
                                                      ("interrupted", progress.INTERRUPTED),
                                                      ("not_started", progress.NOT_STARTED)) if c[key]]
    print(f"Sweep {name}: {', '.join(parts)} (of {c['planned']} trials).", file=out)
    by_error: dict[str, list[str]] = {}  # one error, once, with the trials it ended
    for t in outcome.trials:
        if t.status == schema.STATUS_FAILED and t.error:
            by_error.setdefault(t.error, []).append(t.trial_id)
    for error, trial_ids in by_error.items():
        print(f"Trial {', '.join(trial_ids)} failed:\n  " + error.replace("\n", "\n  "), file=out)


def print_best(outcome: SweepOutcome, params: list[str], run_ids: dict[str, str], out) -> None:
    """The best trial's configuration (``params``: the config keys that differ between
    trials) and every metric of it."""
    best = outcome.best
    if best is None:
        print(f"\nNo trial produced a value of {outcome.metric}.", file=out)
        return
    print(f"\nBest configuration ({outcome.metric} = {fmt(best.value)}, trial {best.trial_id}, "
          f"MLflow run {run_ids.get(best.trial_id)}):", file=out)
    for key in params:
        print(f"  {key} = {best.config.get(key)!r}", file=out)
    print("Its metrics:", file=out)
    for key, value in sorted({outcome.metric: best.value, **best.final}.items()):
        print(f"  {key} = {fmt(value)}", file=out)


def print_mlflow(experiment: str, sweep_name: str, tracking_uri: str, experiment_id: str,
                 parent_run_id: str, out) -> None:
    print(f"\nThe sweep in MLflow (experiment {experiment!r}, parent run {sweep_name!r}: its description is the "
          f"results table, its child runs the trials):", file=out)
    print("  " + ui_command(tracking_uri), file=out)
    print(f"  then open {ui_url(tracking_uri, experiment_id, parent_run_id)}", file=out)


def write_analysis_report(spec) -> Path | None:
    """THE call point of ``analysis/``'s report (tables, tests, figures) at the end of a
    sweep: this sweep read back from MLflow, written to ``reports/<sweep>`` and logged to
    its parent run. Returns its folder (None, doing nothing, where ``analysis.report`` is
    missing)."""
    if importlib.util.find_spec("analysis.report") is None:
        return None
    from analysis import report as analysis_report

    folder = analysis_report.build_report(spec.name, tracking_uri=spec.tracking_uri, experiment=spec.experiment,
                                          out_dir=Path("reports") / spec.name)
    return Path(folder).resolve()


def print_analysis_report(spec, title: str, out) -> None:
    """Build the sweep's report and say where it is (or how to rebuild it)."""
    rebuild = f"python -m analysis {spec.name} --tracking-uri {spec.tracking_uri} --experiment {spec.experiment}"
    try:
        folder = write_analysis_report(spec)
    except Exception as exc:  # noqa: BLE001 - the runs are in MLflow: the report can be rebuilt
        print(f"\nThe {title.lower()} failed ({type(exc).__name__}: {exc}); rebuild it with:\n  {rebuild}", file=out)
        return
    if folder is not None:
        print(f"\n{title}: {folder / 'report.md'} (also under report/ in the MLflow parent run's "
              f"artifacts; rebuild it with: {rebuild})", file=out)
