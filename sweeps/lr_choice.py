"""Learning rates chosen on validation data, with the same budget for every model: the
candidates (a model at a decoder rate, the VAD modules at the paper's ratio to it) and the
rule that picks one rate per model (``choose``). The test split plays no part in the choice.

``sweeps/lr_selection.py`` declares which models and rates; ``sweeps.result_tables``
prints the choice.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from sevlm.config import TrainConfig
from sevlm.variants import VARIANTS
from sweeps.strategies import Grid
from sweeps.summary import SweepOutcome, TrialOutcome

# The paper's VAD-module rate is twice its decoder rate (4e-5 / 2e-5); kept for every candidate.
VAD_RATIO = TrainConfig().lr_vad / TrainConfig().lr_decoder
SEPARATOR = "@lr="


def candidate_name(model: str, lr: float) -> str:
    return f"{model}{SEPARATOR}{lr:g}"


def parse_candidate(name: str) -> tuple[str, float]:
    model, _, lr = name.partition(SEPARATOR)
    return model, float(lr)


def candidates(models: Iterable[str], rates: Iterable[float]) -> dict[str, dict[str, object]]:
    """Every model at every rate: the model's variant overrides plus both learning rates."""
    rates = tuple(rates)
    return {candidate_name(m, lr): {**VARIANTS[m], "train.lr_decoder": lr, "train.lr_vad": lr * VAD_RATIO}
            for m in models for lr in rates}


@dataclass
class Choice:
    model: str
    lr: float  # the chosen decoder rate
    val: dict[float, float]  # rate -> mean validation value over its seeds
    chosen: list[TrialOutcome]  # the chosen rate's trials (their test metrics)


def choose(outcome: SweepOutcome) -> list[Choice]:
    """Per model (in the paper's order), the rate whose trials have the best mean validation
    value. A rate with a trial that reported nothing is not a candidate (its mean would hide
    the failure)."""
    by_model: dict[str, dict[float, list[TrialOutcome]]] = {}
    for t in outcome.trials:
        model, lr = parse_candidate(str(t.config[Grid.VARIANT_KEY]))
        by_model.setdefault(model, {}).setdefault(lr, []).append(t)
    order = list(VARIANTS)
    choices = []
    for model in sorted(by_model, key=lambda m: order.index(m) if m in order else len(order)):
        val = {lr: statistics.mean(t.value for t in trials)
               for lr, trials in sorted(by_model[model].items()) if all(t.value is not None for t in trials)}
        if val:
            best = max(val, key=val.get)
            choices.append(Choice(model, best, val, by_model[model][best]))
    return choices
