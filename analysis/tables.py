"""The report's tables: each a display frame (formatted strings) and, where it differs, a
numeric frame for CSV; written as CSV, Markdown and LaTeX (booktabs)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.paper import TABLE1
from analysis.predictions import (
    ACC,
    BLEU,
    CIDER_METRIC,
    CLOSED_ACC,
    EA,
    LABELS,
    METEOR_METRIC,
    NONWORD_RATE,
    PAINTINGS,
    ROUGE_METRIC,
    UNIQUE,
)
from analysis.runs import MlflowSweep
from analysis.seed_test import MIN_SEEDS, NAME as TEST_NAME, NOT_TESTABLE
from sevlm.heldout import HELDOUT_DATASETS
from sevlm.names import HELDOUT_CLOSED_ACC, INFERENCE_SECONDS, TRAINABLE_PARAMETERS
from sevlm.variants import FIGURES, LABELS as VARIANT_LABELS
from trainables import tracking_schema as schema

# Table 1's columns (the paper's, then CIDEr, closed-set ACC and the non-word rate).
TABLE1_METRICS = (ACC, EA, *BLEU, METEOR_METRIC, ROUGE_METRIC, CIDER_METRIC, UNIQUE, CLOSED_ACC, NONWORD_RATE)
# The held-out closed-set accuracy (a sweep's --heldout, EmoVIT's number on EmoSet): a
# column of every metric table wherever the runs logged it. Metrics are named as logged
# below "test/" ("acc"), held-out ones by their full key ("heldout/emoset/closed_acc").
HELDOUT_METRICS = tuple(schema.heldout_metric(d, HELDOUT_CLOSED_ACC) for d in HELDOUT_DATASETS)
HELDOUT_LABELS = {key: f"held-out ACC ({d})" for key, d in zip(HELDOUT_METRICS, HELDOUT_DATASETS)}
NOT_LOGGED = "not logged"
DATASET_PARAM = "data.dataset"
SECONDARY_COLUMN = "AR seeds p<0.05 (given the trained models)"


@dataclass
class Table:
    stem: str  # file name without suffix
    title: str
    display: pd.DataFrame
    data: pd.DataFrame | None = None  # numbers for the CSV; else the display frame
    note: str = ""


def variant_label(name: str) -> str:
    return VARIANT_LABELS.get(name, name)


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def _key(metric: str) -> str:
    return metric if metric.startswith(schema.HELDOUT_PREFIX) else schema.TEST_PREFIX + metric


def _label(metric: str) -> str:
    return HELDOUT_LABELS.get(metric) or LABELS.get(metric, metric)


def _logged(sweep: MlflowSweep, run_id: str, metric: str) -> float | None:
    key = _key(metric)
    if key not in sweep.metrics.columns:
        return None
    value = sweep.metrics.at[run_id, key]
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _present(sweep: MlflowSweep, metrics: tuple[str, ...]) -> list[str]:
    return [m for m in metrics if _key(m) in sweep.metrics.columns
            and sweep.metrics.loc[sweep.usable, _key(m)].notna().any()]


def summary_table(sweep: MlflowSweep, variants: list[str], stem: str, title: str) -> Table:
    """Mean ± sd over seeds of each variant's logged test metrics, n seeds stated; on ArtEmis
    data the paper's Table 1 numbers beside (rows marked "paper")."""
    seeds, pairs = sweep.seeds_by_variant(), sweep.pairs()
    metrics = _present(sweep, (*TABLE1_METRICS, *HELDOUT_METRICS))
    dataset = _dataset(sweep)
    display, data = [], []
    for variant in [v for v in variants if v in seeds]:
        values = {m: [x for s in seeds[variant] if (x := _logged(sweep, pairs[(variant, s)], m)) is not None]
                  for m in metrics}
        display.append({"model": variant_label(variant), "n seeds": len(seeds[variant]),
                        **{_label(m): _mean_sd(values[m]) for m in metrics}})
        for m in metrics:
            data.append({"variant": variant, "metric": m, "n_seeds": len(values[m]),
                         "mean": np.mean(values[m]) if values[m] else np.nan,
                         "sd": np.std(values[m], ddof=1) if len(values[m]) > 1 else np.nan})
        paper = TABLE1.get(dataset, {}).get(variant)
        if paper:
            display.append({"model": f"{variant_label(variant)} (paper)", "n seeds": 1,
                            **{_label(m): f"{paper[m]:.1f}" if m in paper else "–" for m in metrics}})
    note = "mean ± sd over seeds (sd with n − 1); percent, CIDEr ×100."
    if any(m in HELDOUT_METRICS for m in metrics):
        note += (" held-out ACC: closed-set accuracy over EmoSet's 8 emotions on its test split, which the "
                 "model never trained on (python -m sevlm.evaluate).")
    if dataset in TABLE1:
        note += f" Rows marked (paper): the paper's Table 1 on {dataset} (one run, no CIDEr)."
    return Table(stem, title, pd.DataFrame(display), pd.DataFrame(data), note)


def table1(sweep: MlflowSweep) -> Table:
    return summary_table(sweep, list(FIGURES["table1"]), "table1", "Table 1: Baseline vs SEVLM (test set)")


def variants_table(sweep: MlflowSweep) -> Table:
    return summary_table(sweep, sweep.variant_order(), "variants", "Every variant (test set)")


def comparison_tables(comparisons: pd.DataFrame, n_resamples: int) -> tuple[Table, Table]:
    """Every variant against the full model: the starred family (Δ, per-seed Δ, 95% CI, the test
    and its df, raw and Holm p, stars or "not testable", k of n seeds), and every other metric
    (the same without Holm and stars: for reading)."""
    def rows(frame: pd.DataFrame, family: bool) -> pd.DataFrame:
        out = []
        for r in frame.itertuples(index=False):
            row = {
                "variant": variant_label(r.variant),
                "metric": LABELS[r.metric],
                "SEVLM": f"{r.reference:.2f}",
                "variant score": f"{r.score:.2f}",
                "Δ (SEVLM − variant)": f"{r.delta:+.2f}",
                "Δ per seed": r.seed_deltas if isinstance(r.seed_deltas, str) and r.seed_deltas else "–",
                "95% CI": f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]" if r.testable else "–",
                "test": _test(r),
                "p (raw)": _p(r.p_raw),
            }
            if family:
                row["p (Holm)"] = _p(r.p_holm)
                row["stars"] = r.stars
                row[SECONDARY_COLUMN] = ("–" if pd.isna(r.ar_seeds)
                                         else f"{int(r.ar_significant)} of {int(r.ar_seeds)}")
            out.append(row)
        return pd.DataFrame(out)

    in_family = comparisons["in_family"].astype(bool)
    note = (f"Stars: Holm-adjusted p of the {TEST_NAME} (k − 1 df for the seeds' part, shared painting noise counted "
            "once; docs/significance.md) over the family's testable comparisons (every variant x starred metric). "
            f"'not testable': fewer than {MIN_SEEDS} seeds paired with SEVLM, no claim is made. "
            f"{SECONDARY_COLUMN}: approximate randomisation over the paintings of each seed's trained pair "
            f"(B = {n_resamples}, raw p), conditional on those trained models.")
    starred = Table("comparisons", "Every variant against SEVLM (starred metrics)",
                    rows(comparisons[in_family], True), comparisons[in_family], note)
    other = Table("comparisons_other", "Every variant against SEVLM (other metrics, no correction, no stars)",
                  rows(comparisons[~in_family], False), comparisons[~in_family],
                  "Raw p of the same test, for reading only: not corrected, never starred.")
    return starred, other


def _test(row) -> str:
    if not row.testable:
        return f"{NOT_TESTABLE}: {row.not_testable_reason}"
    return (f"t, {int(row.seed_df)} df (seeds) + paintings {100 * row.painting_share:.0f}% "
            f"(eff. df {row.effective_df:.1f})")


def _p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    # Enough digits that a Holm-adjusted p just under a star's threshold does not print as it.
    return f"{p:.2g}" if p >= 0.01 else f"{p:.4g}" if p >= 1e-4 else f"{p:.1e}"


def per_seed_table(sweep: MlflowSweep) -> Table:
    """Every trial run, raw logged test metrics (failed and killed runs included, marked)."""
    metrics = _present(sweep, (*TABLE1_METRICS, PAINTINGS, *HELDOUT_METRICS))
    frame = sweep.trials.copy()
    for m in metrics:
        frame[_label(m)] = [_logged(sweep, r, m) if r in sweep.usable else None for r in frame["run_id"]]
    keep = ["variant", "seed", "run_name", "status"] if sweep.grid_variants else ["run_name", "status"]
    data = frame[keep + [_label(m) for m in metrics]]
    display = data.copy()
    for m in metrics:
        column = _label(m)
        display[column] = [f"{v:.1f}" if v is not None and not pd.isna(v) else "–" for v in data[column]]
    if "seed" in display:
        display["seed"] = [str(int(s)) if not pd.isna(s) else "–" for s in display["seed"]]
    return Table("per_seed", "Per-run test metrics", display, data, "As logged by each run (percent, CIDEr ×100).")


# What each cost column reads, and its unit.
_COST = (
    ("trainable parameters (M)", TRAINABLE_PARAMETERS),
    ("training samples/s", schema.THROUGHPUT_METRIC),
    ("inference s/painting", schema.TEST_PREFIX + INFERENCE_SECONDS),
    ("peak memory (MB)", schema.PEAK_MEMORY_METRIC),
)
_SCALE = {TRAINABLE_PARAMETERS: 1e-6}
_DIGITS = {schema.TEST_PREFIX + INFERENCE_SECONDS: 4}


def cost_table(sweep: MlflowSweep, group_by_variant: bool) -> Table:
    """The paper's Table 3 from what the runs logged: mean over a variant's runs."""
    trials = sweep.trials[sweep.trials["run_id"].isin(sweep.usable)]
    keys = trials["variant"] if group_by_variant else trials["run_name"]
    rows, data = [], []
    for key in dict.fromkeys(keys):
        ids = trials.loc[keys == key, "run_id"].tolist()
        row = {"variant" if group_by_variant else "run": variant_label(key) if group_by_variant else key}
        for column, metric in _COST:
            values = ([] if metric is None or metric not in sweep.metrics.columns
                      else sweep.metrics.loc[ids, metric].dropna().astype(float).tolist())
            mean = np.mean(values) * _SCALE.get(metric, 1.0) if values else np.nan
            row[column] = f"{mean:.{_DIGITS.get(metric, 1)}f}" if values else NOT_LOGGED
            data.append({"group": key, "quantity": column, "value": mean})
        rows.append(row)
    device = sorted({str(d) for d in trials["device"].dropna()})
    note = (f"Last logged value per run ({schema.THROUGHPUT_METRIC}, {schema.PEAK_MEMORY_METRIC}: GPU memory on GPU, "
            "process RSS on CPU), averaged over a variant's runs."
            + (f" Devices: {', '.join(device)}." if device else ""))
    return Table("cost", "Computational cost", pd.DataFrame(rows), pd.DataFrame(data), note)


def excluded_table(sweep: MlflowSweep) -> Table:
    rows = [{"variant": e.variant or "–", "seed": "–" if e.seed is None else str(e.seed),
             "run": e.run_name or "–", "reason": e.reason} for e in sweep.excluded]
    return Table("excluded", "Runs left out", pd.DataFrame(rows, columns=["variant", "seed", "run", "reason"]))


def trials_table(sweep: MlflowSweep, searched: list[str], objective: str, values: dict[str, float]) -> Table:
    """Alpha search: one row per trial, its searched params, objective ``values`` and test metrics."""
    metrics = _present(sweep, (*TABLE1_METRICS, *HELDOUT_METRICS))
    column = f"best {objective}"
    rows = []
    for r in sweep.trials.itertuples(index=False):
        params = {p: sweep.params.at[r.run_id, p] if p in sweep.params.columns else None for p in searched}
        rows.append({"run": r.run_name, "status": r.status, **params, column: values.get(r.run_id, np.nan),
                     **{_label(m): _logged(sweep, r.run_id, m) for m in metrics}})
    data = pd.DataFrame(rows).sort_values(column, ascending=False, na_position="last", ignore_index=True)
    display = data.map(lambda v: f"{v:.3g}" if isinstance(v, float) and not math.isnan(v) else
                       ("–" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)))
    return Table("trials", "Trials", display, data, f"Sorted by {column} (higher is better); test metrics in percent.")


def _dataset(sweep: MlflowSweep) -> str | None:
    if DATASET_PARAM not in sweep.params.columns:
        return None
    values = sweep.params.loc[sweep.usable, DATASET_PARAM].dropna().unique()
    return str(values[0]) if len(values) == 1 else None


# ------------------------------------------------------------------------- writing


def write_table(table: Table, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{table.stem}.{suffix}" for suffix in ("csv", "md", "tex")]
    (table.data if table.data is not None else table.display).to_csv(paths[0], index=False)
    paths[1].write_text(markdown(table.display) + "\n")
    paths[2].write_text(latex(table.display, table.title))
    return paths


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs tabulate, not a dependency)."""
    if frame.empty:
        return "(none)"

    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def latex(frame: pd.DataFrame, caption: str) -> str:
    """booktabs LaTeX; Unicode kept as is (compile with a Unicode engine or \\usepackage[utf8])."""
    if frame.empty:
        return f"% {caption}: no rows\n"
    styler = frame.astype(str).style.hide(axis="index")
    styler = styler.format(escape="latex").format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, caption=caption.replace("%", r"\%"), position_float="centering")
