"""What a variants x seeds sweep prints at its end, between the trial counts and where the
sweep is in MLflow: the ``print_results`` of its :class:`sweeps.cli.Sweep` (the default,
the best trial, is ``sweeps.cli.print_best_trial``).

``print_variant_results``: test metrics per variant and seed, and per variant over its
seeds (``sweeps/ablations.py``). ``print_lr_choice``: each model's validation value per
learning rate, the rate ``sweeps.lr_choice.choose`` picks, and the test metrics there
(``sweeps/lr_selection.py``).
"""

from __future__ import annotations

import statistics

from sevlm.config import tiny
from sevlm.variants import VARIANTS
from sweeps.ablation_benchmark import PRETRAINED_LR_DECODER
from sweeps.lr_choice import VAD_RATIO, choose
from sweeps.progress import format_table
from sweeps.spec import SweepSpec
from sweeps.strategies import Grid
from sweeps.summary import SweepOutcome
from trainables import tracking_schema as schema


def print_variant_results(spec: SweepSpec, outcome: SweepOutcome, run_ids: dict[str, str], out) -> None:
    print_variant_table(outcome, out)


def print_variant_table(outcome: SweepOutcome, out) -> None:
    """Test metrics per variant and seed, then each variant's mean ± sd over its seeds."""
    order = {name: i for i, name in enumerate(VARIANTS)}
    variant = lambda t: str(t.config.get(Grid.VARIANT_KEY))  # noqa: E731
    seed = lambda t: t.config.get(Grid.SEED_KEY)  # noqa: E731
    # A trial that an interrupted sweep created but never started may come back without
    # its config: the counts line has it ("not started").
    trials = sorted((t for t in outcome.trials if t.config.get(Grid.VARIANT_KEY) is not None),
                    key=lambda t: (order.get(variant(t), len(order)), seed(t) or 0))
    count = schema.TEST_PREFIX + schema.COUNT_METRIC
    known = [m for m in schema.TEST_METRICS if m != count]
    found = {k for t in trials for k in t.final if k.startswith(schema.TEST_PREFIX)}
    metrics = [m for m in known if m in found] + sorted(found - set(known) - {count})
    names = [m[len(schema.TEST_PREFIX):] for m in metrics]
    paintings = {int(t.final[count]) for t in trials if count in t.final}
    print(f"\nTest metrics on {', '.join(map(str, sorted(paintings))) or 'no'} test paintings:", file=out)
    rows = [[variant(t), str(seed(t)), t.state]
            + [f"{t.final[m]:.3g}" if m in t.final else "-" for m in metrics] for t in trials]
    print(format_table(rows, ["variant", "seed", "status"] + names), file=out)
    rows = []
    for name in dict.fromkeys(variant(t) for t in trials):
        done = [t for t in trials if variant(t) == name and t.final]
        cells = []
        for m in metrics:
            values = [t.final[m] for t in done if m in t.final]
            sd = f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3g}{sd}" if values else "-")
        rows.append([name, str(len(done))] + cells)
    print("\nMean ± sd over seeds:", file=out)
    print(format_table(rows, ["variant", "seeds"] + names), file=out)


def print_lr_choice(spec: SweepSpec | None, outcome: SweepOutcome, run_ids: dict[str, str], out) -> None:
    """Mean validation value per model and decoder rate with the chosen rate, the test
    metrics at each model's chosen rate, and the rate the benchmark uses now."""
    choices = choose(outcome)
    rates = sorted({lr for c in choices for lr in c.val})
    print(f"\nMean validation {outcome.metric} per decoder learning rate (VAD modules at {VAD_RATIO:g}x):", file=out)
    rows = [[c.model] + [f"{c.val[lr]:.4g}" if lr in c.val else "-" for lr in rates] + [f"{c.lr:g}"]
            for c in choices]
    print(format_table(rows, ["model"] + [f"lr={lr:g}" for lr in rates] + ["chosen"]), file=out)
    metrics = [m for m in schema.TEST_METRICS if any(m in t.final for c in choices for t in c.chosen)]
    rows = []
    for c in choices:
        cells = []
        for m in metrics:
            values = [t.final[m] for t in c.chosen if m in t.final]
            cells.append(f"{statistics.mean(values):.3g}" if values else "-")
        rows.append([c.model, f"{c.lr:g}", str(len(c.chosen))] + cells)
    print("\nTest metrics at each model's chosen rate (mean over seeds):", file=out)
    print(format_table(rows, ["model", "lr", "seeds"] + [m[len(schema.TEST_PREFIX):] for m in metrics]), file=out)
    if spec is not None and spec.overrides.get("model.decoder_init") == "pretrained":
        where, preset_lr = ("The pre-trained regime's decoder rate (sweeps/ablation_benchmark.py, "
                            "PRETRAINED_LR_DECODER)"), PRETRAINED_LR_DECODER
    else:
        where, preset_lr = "The tiny preset's decoder rate", tiny().train.lr_decoder
    print(f"\n{where} is {preset_lr:g}; "
          + ", ".join(f"{c.model} chose {c.lr:g}" for c in choices) + ".", file=out)
