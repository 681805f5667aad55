"""The report's figures (matplotlib, PNG and PDF): the paper's ablation figures, the α curve,
and for an alpha search each metric against the searched parameters, their importance and
a parallel-coordinates plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines that build reports
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.predictions import LABELS  # noqa: E402
from analysis.tables import variant_label  # noqa: E402
from sevlm.variants import ALPHA_VARIANTS  # noqa: E402

COLORS = plt.get_cmap("tab10").colors
# Whiskers of a variant with fewer seeds than a test needs: the paintings' interval alone.
_CONDITIONAL = {"color": "0.55", "linestyle": "--"}
_NOT_TESTABLE_MARK = "n.t."
INTERVAL_NOTE = ("whiskers: 95% interval over seeds and test paintings; grey dashed: fewer than 3 seeds, "
                 "test paintings only (given the trained models)")
# Dots of one variant spread over this fraction of the bar's width.
_JITTER = 0.5


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _grid(n: int, max_cols: int = 3, size=(3.4, 3.0)):
    cols = min(n, max_cols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def ablation_figure(variants: list[str], metrics: list[str], intervals: pd.DataFrame, seeds: pd.DataFrame,
                    comparisons: pd.DataFrame, title: str):
    """One panel per metric; a bar per variant (seed mean) with its 95% interval (``intervals``
    of ``analysis.significance``), a dot per seed, and the stars of the variant's comparison with
    the full model (the first variant; "n.t." where not testable)."""
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        marks = _stars(comparisons, metric)
        tops = []
        for i, variant in enumerate(variants):
            row = intervals[(intervals["variant"] == variant) & (intervals["metric"] == metric)].iloc[0]
            color = COLORS[i % len(COLORS)]
            ax.bar(i, row["score"], width=0.7, color=color, alpha=0.55, edgecolor=color)
            _whisker(ax, i, row, "black", linewidth=1.2)
            dots = seeds[(seeds["variant"] == variant) & (seeds["metric"] == metric)]["score"].to_numpy()
            ax.scatter(i + _dot_offsets(len(dots)), dots, s=14, color="black", zorder=3)
            tops.append(max([row["ci_high"], *dots]))
        top = max(tops)
        bottom = min(0.0, *intervals.loc[intervals["metric"] == metric, "ci_low"])
        # Scores are percent: a span under one point is noise, not worth a magnified axis.
        span = max(top - bottom, 1.0)
        for i, variant in enumerate(variants):
            if variant in marks:  # just above the variant's own whisker and dots
                ax.text(i, tops[i] + 0.03 * span, marks[variant], ha="center", va="bottom", fontsize=10)
        ax.set_ylim(bottom=bottom, top=max(top + 0.14 * span, bottom + span))
        ax.set_title(LABELS.get(metric, metric), fontsize=11)
        ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[i % len(COLORS)], alpha=0.55) for i in range(len(variants))]
    fig.legend(handles, [variant_label(v) for v in variants], loc="lower center", ncol=min(len(variants), 4),
               frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title + "\nstars: against " + variant_label(variants[0]) + ", t over seeds x paintings, "
                 f"Holm-adjusted; {_NOT_TESTABLE_MARK} = not testable (< 3 seeds)", fontsize=11)
    fig.text(0.5, -0.03, INTERVAL_NOTE, ha="center", va="top", fontsize=8)  # below the legend (tight bbox)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    return fig


def _dot_offsets(n: int) -> np.ndarray:
    """Seed dots in a short row right of the bar's centre, clear of the whisker."""
    return np.linspace(0.12, 0.12 + _JITTER / 2, n) if n > 1 else np.full(n, 0.15)


def _stars(comparisons: pd.DataFrame, metric: str) -> dict[str, str]:
    if comparisons.empty:
        return {}
    rows = comparisons[(comparisons["metric"] == metric) & comparisons["in_family"]]
    return {v: s if t else _NOT_TESTABLE_MARK for v, s, t in zip(rows["variant"], rows["stars"], rows["testable"])}


def _whisker(ax, x, row, color, **kwargs) -> None:
    """The 95% interval of ``row``; grey and dashed where it is the paintings' alone."""
    counted = _counted(row)
    lines = ax.errorbar(x, row["score"], yerr=[[row["score"] - row["ci_low"]], [row["ci_high"] - row["score"]]],
                        color=color if counted else _CONDITIONAL["color"], capsize=4, **kwargs)
    if not counted:
        lines[2][0].set_linestyle(_CONDITIONAL["linestyle"])


def _counted(row) -> bool:
    """Whether an interval counts the seeds (else the paintings' alone); older frames lack the column."""
    return bool(row.get("seeds_counted", True))


def alpha_curve(metrics: list[str], intervals: pd.DataFrame, seeds: pd.DataFrame):
    """Each metric against α (log axis): seed mean with its 95% interval and a dot per seed."""
    alphas = {name: alpha for alpha, name in ALPHA_VARIANTS.items()}
    present = [v for v in alphas if v in set(intervals["variant"])]
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        rows = intervals[(intervals["metric"] == metric) & intervals["variant"].isin(present)].copy()
        rows["alpha"] = rows["variant"].map(alphas)
        rows = rows.sort_values("alpha")
        ax.plot(rows["alpha"], rows["score"], marker="o", color=COLORS[0])
        for _, row in rows.iterrows():
            _whisker(ax, row["alpha"], row, COLORS[0])
        dots = seeds[(seeds["metric"] == metric) & seeds["variant"].isin(present)]
        ax.scatter(dots["variant"].map(alphas), dots["score"], s=12, color="black", zorder=3, alpha=0.7)
        ax.set_xscale("log")
        ax.set_xticks(sorted(alphas[v] for v in present), [f"{alphas[v]:g}" for v in sorted(present, key=alphas.get)])
        ax.minorticks_off()
        ax.set_xlabel("α")
        ax.set_title(LABELS.get(metric, metric), fontsize=11)
        ax.grid(alpha=0.3)
    fig.suptitle("Sensitivity to α (dots: seeds)", fontsize=12)
    fig.text(0.5, 0.005, INTERVAL_NOTE, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def metric_vs_params(trials: pd.DataFrame, params: list[str], metrics: list[str], log_params: set[str]):
    """A row per metric, a column per searched parameter; one dot per trial."""
    fig, axes = plt.subplots(len(metrics), len(params), figsize=(2.9 * len(params), 2.5 * len(metrics)),
                             squeeze=False)
    for r, metric in enumerate(metrics):
        for c, param in enumerate(params):
            ax = axes[r, c]
            x, labels = _axis_values(trials[param])
            ax.scatter(x, trials[metric], s=18, color=COLORS[0])
            if labels is not None:
                ax.set_xticks(range(len(labels)), labels)
                ax.set_xlim(-0.5, len(labels) - 0.5)
            elif param in log_params:
                ax.set_xscale("log")
                _log_ticks(ax, x)
            if r == len(metrics) - 1:
                ax.set_xlabel(param, fontsize=9)
            if c == 0:
                ax.set_ylabel(metric, fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle(f"{metrics[0]} (best of each trial) and test metrics against the searched parameters "
                 "(one dot per trial)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _log_ticks(ax, values) -> None:
    """At most 4 labelled ticks on a log axis, as plain numbers (0.002, 0.005, 0.01).
    Matplotlib labels the minor ticks of an axis that spans less than a decade or two, in
    a panel 3 inches wide their labels ("3×10⁻³4×10⁻³6×10⁻³") run into each other."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    positive = [float(v) for v in values if np.isfinite(v) and v > 0]
    if not positive:
        return
    lo, hi = min(positive), max(positive)
    decades = range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
    ticks: list[float] = []
    for subs in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), tuple(range(1, 10))):
        found = sorted(m * 10.0 ** e for e in decades for m in subs if lo / 1.02 <= m * 10.0 ** e <= hi * 1.02)
        if len(found) > 4 and not ticks:  # many decades: every other power of ten
            found = found[::-(-len(found) // 4)]
        if 2 <= len(found) <= 4:
            ticks = found
            if len(found) >= 3:
                break
        elif len(found) > 4:
            break
    if not ticks:  # a range too narrow for round numbers: its two ends
        ticks = sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _axis_values(values: pd.Series):
    """Numbers as they are; booleans and words as category positions with their labels."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype(float), None
    labels = sorted({str(v) for v in values})
    return values.map(lambda v: labels.index(str(v))), labels


def importance_figure(importances: dict[str, float], target: str):
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names], color=COLORS[0])
    for i, n in enumerate(names):
        ax.text(importances[n], i, f" {importances[n]:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, max(importances.values(), default=1) * 1.2 or 1)
    ax.set_xlabel(f"importance for {target} (fANOVA)")
    ax.set_title("Parameter importance")
    fig.tight_layout()
    return fig


def parallel_coordinates(study, target: str):
    """Optuna's parallel-coordinates plot of the trials read back from MLflow."""
    import warnings

    from optuna.visualization.matplotlib import plot_parallel_coordinate

    with warnings.catch_warnings():  # "experimental" warning of optuna's matplotlib backend
        warnings.simplefilter("ignore")
        ax = plot_parallel_coordinate(study, target_name=target)
    fig = ax.figure
    fig.set_size_inches(max(7.0, 1.6 * len(study.trials[0].params) + 2), 4.5)
    fig.tight_layout()
    return fig
