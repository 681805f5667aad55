"""A sweep's runs read back from MLflow: who ran, what they logged, and what is missing.

Ray-free (``trainables.mlflow_store`` opens the store and lists the runs). Every run that
cannot enter the analysis (failed, killed, still running, never started, no predictions)
ends up in ``MlflowSweep.excluded`` with its reason, so that the report names it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sevlm.variants import VARIANTS
from trainables import mlflow_store
from trainables import tracking_schema as schema

ABLATIONS = "ablations"
ALPHA_SEARCH = "alpha_search"
# Columns of ``MlflowSweep.trials`` (one row per trial run).
INFO_COLUMNS = ("run_id", "run_name", "status", "end_reason", "error", "variant", "seed", "trial_index", "device")


class SweepNotFound(LookupError):
    """No parent run of that sweep name in the store."""


@dataclass
class Exclusion:
    """A (variant, seed) or trial left out of the analysis, and why."""

    variant: str | None
    seed: int | None
    run_name: str | None
    reason: str


@dataclass
class MlflowSweep:
    """One sweep as MLflow holds it (read back by ``load_sweep``; not the declaration of
    a sweep kind, ``sweeps.cli.Sweep``).

    ``trials``: INFO_COLUMNS per trial run; ``params`` and ``metrics``: one row per run id,
    the run's params (parsed to numbers and booleans) and last logged metric values.
    ``usable``: run ids whose final test metrics were logged (FINISHED).
    """

    name: str
    kind: str
    experiment_id: str
    parent: Any  # mlflow.entities.Run
    trials: pd.DataFrame
    params: pd.DataFrame
    metrics: pd.DataFrame
    grid_variants: list[str] = field(default_factory=list)
    grid_seeds: list[int] = field(default_factory=list)
    # Variants the grid ran at only its first N seeds (the α sensitivity, by default).
    grid_seed_counts: dict[str, int] = field(default_factory=dict)
    excluded: list[Exclusion] = field(default_factory=list)

    def grid_seeds_of(self, variant: str) -> list[int]:
        return self.grid_seeds[: self.grid_seed_counts.get(variant, len(self.grid_seeds))]

    @property
    def parent_run_id(self) -> str:
        return self.parent.info.run_id

    @property
    def usable(self) -> list[str]:
        ok = self.trials["status"] == schema.STATUS_FINISHED
        return self.trials.loc[ok, "run_id"].tolist()

    def exclude(self, run_id: str, reason: str) -> None:
        """Leave a run out from here on (e.g. its predictions artifact is missing)."""
        row = self.trials.set_index("run_id").loc[run_id]
        self.excluded.append(Exclusion(row["variant"], _int_or_none(row["seed"]), row["run_name"], reason))
        self.trials.loc[self.trials["run_id"] == run_id, "status"] = "EXCLUDED"

    def seeds_by_variant(self) -> dict[str, list[int]]:
        """Usable seeds of each variant, variants in the paper's order."""
        usable = self.trials[self.trials["run_id"].isin(self.usable)]
        out = {v: sorted(int(s) for s in usable.loc[usable["variant"] == v, "seed"]) for v in self.variant_order()}
        return {v: s for v, s in out.items() if s}

    def pairs(self) -> dict[tuple[str, int], str]:
        """(variant, seed) -> run id of its usable run."""
        usable = self.trials[self.trials["run_id"].isin(self.usable)]
        return {(v, int(s)): r for v, s, r in zip(usable["variant"], usable["seed"], usable["run_id"])
                if v is not None and not pd.isna(s)}

    def variant_order(self) -> list[str]:
        """The grid's variants in the paper's order, then any other variant the runs name."""
        seen = [v for v in self.trials["variant"].dropna().unique() if v]
        names = list(dict.fromkeys([*self.grid_variants, *seen]))
        paper = [v for v in VARIANTS if v in names]
        return paper + sorted(v for v in names if v not in paper)


def load_sweep(sweep_name: str, tracking_uri: str | None = None, experiment: str | None = None,
               client=None) -> MlflowSweep:
    """Read ``sweep_name`` from the store (``experiment``, or whichever experiment holds it)."""
    uri = mlflow_store.resolve_tracking_uri(tracking_uri)
    client = client or mlflow_store.open_tracking_store(uri)
    runs = _find_sweep(client, sweep_name, experiment)
    parent = runs.parent
    kind = parent.data.tags.get(schema.TAG_SWEEP_KIND, "")
    trials = pd.DataFrame([_info(r) for r in runs.trials], columns=list(INFO_COLUMNS))
    trials = trials.sort_values(["trial_index", "run_name"], na_position="last", ignore_index=True)
    params = pd.DataFrame({r.info.run_id: {k: parse_value(v) for k, v in r.data.params.items()} for r in runs.trials}).T
    metrics = pd.DataFrame({r.info.run_id: dict(r.data.metrics) for r in runs.trials}).T
    variants, seeds, counts = _grid(parent)
    sweep = MlflowSweep(sweep_name, kind, runs.experiment_id, parent, trials, params, metrics, variants, seeds, counts)
    sweep.excluded = _exclusions(sweep)
    return sweep


def _find_sweep(client, sweep_name: str, experiment: str | None) -> mlflow_store.SweepRuns:
    names = [experiment] if experiment else [schema.DEFAULT_EXPERIMENT]
    if not experiment:  # any other experiment that holds it, if not the default one
        names += [e.name for e in mlflow_store.with_retry(client.search_experiments) if e.name not in names]
    for name in names:
        runs = mlflow_store.sweep_runs(client, sweep_name, name)
        if runs.parent is not None:
            return runs
    where = f"experiment {experiment!r}" if experiment else "any experiment"
    raise SweepNotFound(f"no parent run of sweep {sweep_name!r} in {where} of the store")


def _info(run) -> dict[str, Any]:
    tags = run.data.tags
    index = tags.get(schema.TAG_TRIAL_INDEX)
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or tags.get(schema.TAG_TRIAL_NAME, run.info.run_id),
        "status": run.info.status,
        "end_reason": tags.get(schema.TAG_END_REASON, ""),
        "error": tags.get(schema.TAG_ERROR, ""),
        "variant": tags.get(schema.TAG_VARIANT),
        "seed": _int_or_none(tags.get(schema.TAG_SEED)),
        "trial_index": int(index) if index is not None and index.isdigit() else None,
        "device": tags.get(schema.TAG_DEVICE),
    }


def _grid(parent) -> tuple[list[str], list[int], dict[str, int]]:
    """The variants and seeds an ablation sweep was asked to run (its parent's grid tag),
    and the variants it ran at fewer seeds."""
    text = parent.data.tags.get(schema.TAG_GRID)
    if not text:
        return [], [], {}
    grid = json.loads(text)
    counts = {str(k): int(v) for k, v in (grid.get("seed_counts") or {}).items()}
    return list(grid.get("variants", {})), [int(s) for s in grid.get("seeds", [])], counts


def _exclusions(sweep: MlflowSweep) -> list[Exclusion]:
    out = []
    for row in sweep.trials.itertuples(index=False):
        if row.status == schema.STATUS_FINISHED:
            continue
        detail = ", ".join(x for x in (row.end_reason, row.error) if x)
        reason = row.status + (f" ({detail})" if detail else "")
        out.append(Exclusion(row.variant, _int_or_none(row.seed), row.run_name, reason))
    done = {(v, _int_or_none(s)) for v, s in zip(sweep.trials["variant"], sweep.trials["seed"])}
    for variant in sweep.grid_variants:
        for seed in sweep.grid_seeds_of(variant):
            if (variant, seed) not in done:
                out.append(Exclusion(variant, seed, None, "missing: no MLflow run"))
    return out


def parse_value(text: str) -> Any:
    """An MLflow param (always a string) as the bool, int, float or string it was."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _int_or_none(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)
