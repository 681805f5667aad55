"""An alpha search read back from MLflow as an in-memory Optuna study, for its importance
and parallel-coordinates plots (Optuna's evaluators need a study, not a table)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass

import pandas as pd

from analysis.runs import MlflowSweep
from sweeps.space import ParamSpec, parse_space
from trainables import tracking_schema as schema


@dataclass
class Search:
    space: dict[str, ParamSpec]  # the searched parameters, as the sweep declared them
    objective: str  # the metric the sweep maximised ("val/bleu4")
    values: pd.DataFrame  # completed trials: run_id, the params, the objective, test metrics


def read_search(sweep: MlflowSweep) -> Search:
    tags, params = sweep.parent.data.tags, sweep.parent.data.params
    if schema.TAG_SEARCH_SPACE in tags:
        texts = json.loads(tags[schema.TAG_SEARCH_SPACE])
    else:
        texts = {k[len(schema.PARENT_SPACE_PREFIX):]: v for k, v in params.items()
                 if k.startswith(schema.PARENT_SPACE_PREFIX)}
    space = parse_space(texts)
    objective = tags.get(schema.TAG_METRIC, "")
    rows = []
    for run_id in sweep.usable:
        row = {"run_id": run_id}
        for key in space:
            row[key] = sweep.params.at[run_id, key] if key in sweep.params.columns else None
        row[objective] = objective_value(sweep, run_id, objective)
        rows.append(row)
    return Search(space, objective, pd.DataFrame(rows, columns=["run_id", *space, objective]))


def objective_value(sweep: MlflowSweep, run_id: str, metric: str) -> float:
    """The trial's best value of the optimised metric, else its last one."""
    for key in (schema.BEST_PREFIX + metric, metric):
        if key in sweep.metrics.columns and not pd.isna(sweep.metrics.at[run_id, key]):
            return float(sweep.metrics.at[run_id, key])
    return math.nan


def study(search: Search):
    """An in-memory study holding one completed trial per run with a value of the objective."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {k: spec.distribution() for k, spec in search.space.items()}
    result = optuna.create_study(direction="maximize")
    for record in search.values.to_dict("records"):
        value = float(record[search.objective])
        params = {k: _native(record[k]) for k in search.space}
        if math.isnan(value) or any(v is None or not search.space[k].contains(v) for k, v in params.items()):
            continue  # a trial outside the declared space (or without a value) cannot enter the study
        result.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    return result


def _native(value):
    """numpy scalars to the Python values Optuna's distributions compare with."""
    return value.item() if hasattr(value, "item") else value


def importances(result) -> dict[str, float]:
    """fANOVA importances (Optuna's default evaluator, fixed seed); {} with too few trials,
    or when every trial has the same value (fANOVA has no variance to apportion and fails)."""
    import optuna

    if len(result.trials) < 2 or len({t.value for t in result.trials}) < 2:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(
            result, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
