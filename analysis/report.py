"""``build_report``: a sweep read back from MLflow -> tables, figures, report.md and report.html,
logged as artifacts of the sweep's parent run (under ``report/``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from threadpoolctl import threadpool_limits

from analysis import figures, render, search as search_mod, seed_test, significance, tables
from analysis.predictions import (
    ACC,
    BLEU,
    CIDER_METRIC,
    EA,
    HAS_DOMINANT,
    LABELS,
    METEOR_METRIC,
    METEOR_NOTE,
    ROUGE_METRIC,
    STARRED,
    align,
    load_predictions,
)
from analysis.render import Document
from analysis.runs import ALPHA_SEARCH, MlflowSweep, load_sweep
from sevlm.variants import ALPHA_VARIANTS, FIGURES, FULL
from trainables import mlflow_store
from trainables import tracking_schema as schema


# The resampling seed of every test in a report (recorded in it); change it with --seed.
DEFAULT_SEED = 20240317
REPORT_ARTIFACT_DIR = "report"
# Panels of the ablation figures (those the runs computed).
FIGURE_METRICS = (ACC, EA, BLEU[3], METEOR_METRIC, ROUGE_METRIC, CIDER_METRIC)
# The paper's figures, in its order, with their titles.
ABLATION_FIGURES = {
    "fig5": "Fig. 5: main components",
    "fig6": "Fig. 6: emotion encoder",
    "fig7": "Fig. 7: negative samples",
}
SEARCH_PLOT_METRICS = (ACC, BLEU[3], CIDER_METRIC)


def build_report(sweep_name: str, tracking_uri: str | None = None, experiment: str | None = None,
                 out_dir: str | Path | None = None, *, n_resamples: int | None = None, seed: int = DEFAULT_SEED,
                 log_to_mlflow: bool = True) -> Path:
    """Write the report of ``sweep_name`` into ``out_dir`` (default ``reports/<sweep>``) and log it
    to the sweep's parent run. Returns the folder."""
    uri = mlflow_store.resolve_tracking_uri(tracking_uri)
    client = mlflow_store.open_tracking_store(uri)
    sweep = load_sweep(sweep_name, uri, experiment, client=client)
    out = Path(out_dir) if out_dir is not None else Path("reports") / sweep_name
    if out.exists():
        shutil.rmtree(out)  # nothing of an earlier build may pass for this one's
    out.mkdir(parents=True)
    doc = Document(f"Sweep {sweep.name}")
    doc.paragraph(f"Kind: {sweep.kind or 'unknown'}; parent run {sweep.parent_run_id} in experiment "
                  f"{sweep.experiment_id}; {len(sweep.trials)} trial runs, {len(sweep.usable)} finished. "
                  f"Store: {uri}. In the MLflow UI: {mlflow_store.ui_url(uri, sweep.experiment_id, sweep.parent_run_id)}"
                  + (f" (after `{mlflow_store.ui_command(uri)}`)." if mlflow_store.sqlite_path(uri) else "."))
    # The resampling multiplies (1024 x paintings) by (paintings x a few dozen) matrices:
    # BLAS threads cost more than they bring there, 30x more on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        if sweep.kind == ALPHA_SEARCH or not sweep.grid_variants:
            _search_report(sweep, doc, out)
        else:
            _ablation_report(sweep, client, doc, out, n_resamples, seed)
    render.write(doc, out)
    if log_to_mlflow:
        mlflow_store.with_retry(client.log_artifacts, sweep.parent_run_id, str(out), REPORT_ARTIFACT_DIR)
    return out


# ------------------------------------------------------------------------ ablations


def _ablation_report(sweep: MlflowSweep, client, doc: Document, out: Path, n_resamples: int | None, seed: int) -> None:
    aligned = align(load_predictions(sweep, client))
    seeds = sweep.seeds_by_variant()
    settings = significance.settings_for(sweep, aligned, seed, n_resamples)
    _completeness(sweep, seeds, aligned, doc, out)
    if not seeds or not aligned.paintings:
        doc.paragraph("No finished run with predictions, or no test painting that every run scored: "
                      "nothing to compare.")
        return
    comparisons = significance.compare(sweep, aligned, settings)
    present = {m.name for m in significance.metrics_present(aligned)}
    panel_metrics = [m for m in FIGURE_METRICS if m in present]
    metric_objects = [m for m in significance.metrics_present(aligned) if m.name in panel_metrics]
    intervals = significance.intervals(sweep, aligned, settings, metric_objects)
    per_seed = significance.per_seed_scores(sweep, aligned, metric_objects)

    _methods(sweep, seeds, aligned, settings, present, comparisons, doc)
    if all(v in seeds for v in FIGURES["table1"]):
        doc.table(tables.table1(sweep), out)
    if not comparisons.empty:
        starred, other = tables.comparison_tables(comparisons, settings.n_resamples)
        doc.table(starred, out)
        doc.table(other, out, inline=False)
    elif FULL not in seeds:
        doc.paragraph(f"No finished run of the full model ({FULL}): no variant can be compared with it.")
    for key, title in ABLATION_FIGURES.items():
        variants = [v for v in FIGURES[key] if v in seeds]
        if FULL in variants and len(variants) > 1 and panel_metrics:
            fig = figures.ablation_figure(variants, panel_metrics, intervals, per_seed, comparisons,
                                          f"{title} (bars: seed mean, 95% interval; dots: seeds)")
            doc.figure(figures.save(fig, out, key), title)
    alpha = [v for v in ALPHA_VARIANTS.values() if v in seeds]
    if len(alpha) > 1 and panel_metrics:
        doc.figure(figures.save(figures.alpha_curve(panel_metrics, intervals, per_seed), out, "alpha"),
                   "Sensitivity to α")
    doc.table(tables.variants_table(sweep), out)
    doc.table(tables.per_seed_table(sweep), out, inline=False)
    _cost(sweep, doc, out, group_by_variant=True)
    intervals.to_csv(out / "intervals.csv", index=False)
    per_seed.to_csv(out / "per_seed_recomputed.csv", index=False)


def _completeness(sweep: MlflowSweep, seeds: dict[str, list[int]], aligned, doc: Document, out: Path) -> None:
    doc.heading("Runs")
    most = max((len(s) for s in seeds.values()), default=0)
    fewer = {v: s for v, s in seeds.items() if len(s) < most}
    doc.paragraph(f"Grid: {len(sweep.grid_variants)} variants x seeds {sweep.grid_seeds}. Analysed: "
                  + (", ".join(f"{tables.variant_label(v)} (seeds {', '.join(map(str, s))})" for v, s in seeds.items())
                     or "nothing") + ".")
    if fewer:
        planned = [v for v in fewer if len(sweep.grid_seeds_of(v)) < len(sweep.grid_seeds)]
        doc.warning("Fewer seeds than the others (means, CIs and tests rest on fewer runs): "
                    + ", ".join(f"{tables.variant_label(v)}: {len(s)} of {most}" for v, s in fewer.items()) + "."
                    + (f" The sweep ran {', '.join(map(tables.variant_label, planned))} at fewer seeds by design"
                       " (sweeps/ablations.py --all-seeds runs every seed)." if planned else ""))
    classifiers = ea_classifiers(sweep)
    if len(classifiers) > 1:
        doc.warning(f"EA was scored by {len(classifiers)} different EA classifiers across these runs (param "
                    f"{schema.PARAM_EA_CLASSIFIER}: " + ", ".join(f"{c} in {n} runs" for c, n in classifiers.items())
                    + "): EA differences between them mix the models with their classifiers. Share one by "
                    "pointing data.ea_classifier_dir at storage every node sees.")
    if sweep.excluded:
        doc.warning(f"{len(sweep.excluded)} (variant, seed) runs left out of every table, test and figure below:")
        doc.table(tables.excluded_table(sweep), out)
    else:
        doc.paragraph("No run left out: every (variant, seed) of the grid finished with its predictions.")
    if aligned.dropped:
        doc.warning(f"{aligned.dropped} test paintings were not scored by every run and are left out of the "
                    f"recomputed scores and tests ({len(aligned.paintings)} kept).")


def _pairing(comparisons, seeds: dict[str, list[int]]) -> str:
    """Which comparisons paired their seeds (seed i against seed i: same initialisation and batches)."""
    unpaired = sorted(set(comparisons.loc[~comparisons["paired_seeds"], "variant"])) if not comparisons.empty else []
    text = ("Seeds paired: " + ("yes" if not unpaired else "yes except for " + ", ".join(map(tables.variant_label, unpaired))
                                + " (no seed in common with SEVLM: not testable)")
            + " (seed i of a variant against seed i of SEVLM, on the seeds both have: same initialisation and "
            "batches). Seeds: ")
    return text + "; ".join(f"{tables.variant_label(v)} {', '.join(map(str, s))}" for v, s in seeds.items()) + "."


def _methods(sweep: MlflowSweep, seeds, aligned, settings, present: set[str], comparisons, doc: Document) -> None:
    doc.heading("Significance tests")
    with_dominant = int(next(iter(aligned.frames.values())).loc[aligned.paintings, HAS_DOMINANT].sum())
    starred = [LABELS[m] for m in STARRED if m in present]
    missing = [LABELS[m] for m in STARRED if m not in present]
    doc.bullets([
        f"Primary test (behind the stars): {seed_test.NAME} on the seeds both systems have (seed i of a variant "
        "against seed i of SEVLM). Each seed's Δ is the full corpus metric on all test paintings (corpus BLEU from "
        "summed statistics, one brevity penalty); its variance over training seeds and test paintings is "
        "split into the spread of the per-seed Δ (training randomness, k − 1 df) and the painting noise "
        "every seed shares (counted once), from the seeds x paintings table of jackknife-linearised "
        "per-painting differences. Generalised t p-value (two-sided) and 95% interval; the table gives the "
        "per-seed Δ, the df and the painting share of the variance. On planted nulls its false-positive rate "
        "stays at or below 0.05 for seed spreads 0-6x the test-set SE at 3 and 5 seeds "
        "(benchmarks/bench_significance_calibration.py, docs/significance.md).",
        f"Not testable: fewer than {seed_test.MIN_SEEDS} seeds paired with SEVLM. Such comparisons get no p and "
        "no stars: two trained models per system cannot tell training randomness from a real difference.",
        _pairing(comparisons, seeds),
        f"Test paintings: {len(aligned.paintings)} ({with_dominant} with a dominant emotion: ACC, closed ACC "
        "and EA count only these).",
        f"Family: {len(settings.family)} comparisons (every variant x {', '.join(starred) or 'none'}), "
        f"{_testable(comparisons)} of them testable; Holm correction over those (statsmodels multipletests, "
        "method 'holm'); stars from the adjusted p: * < 0.05, ** < 0.01, *** < 0.001, n.s. otherwise.",
        f"Secondary, conditional on the trained models: paired approximate randomisation over the paintings "
        f"of each seed (B = {settings.n_resamples}, resampling seed {settings.seed} + seed index), reported as "
        f"'k of n seeds' with raw p < {significance.SEED_LEVEL}. It says whether these trained models differ on "
        "these paintings, not whether retraining would reproduce the difference.",
        "Corpus BLEU is recomputed from the clipped n-gram counts and lengths (one brevity penalty per corpus); "
        "CIDEr keeps the IDF of the full test set; ROUGE-L, ACC and EA are means.",
        "Intervals of the figures: the same decomposition for each variant's score; below "
        f"{seed_test.MIN_SEEDS} seeds (grey, dashed) the test paintings' interval alone, given the trained models.",
        METEOR_NOTE + "." if METEOR_METRIC in present else
        f"METEOR was not computed by these runs ({', '.join(missing)} left out of the family; "
        "rerun with --set eval.use_meteor=true).",
    ])


def _testable(comparisons) -> int:
    if comparisons.empty:
        return 0
    return int((comparisons["in_family"] & comparisons["testable"]).sum())


def _cost(sweep: MlflowSweep, doc: Document, out: Path, group_by_variant: bool) -> None:
    table = tables.cost_table(sweep, group_by_variant)
    doc.table(table, out)
    if (table.display == tables.NOT_LOGGED).to_numpy().any():
        doc.paragraph("'not logged': these runs predate the parameter count and the inference time per "
                      "painting in their final metrics; a rerun fills these columns.")


# ---------------------------------------------------------------------- alpha search


def _search_report(sweep: MlflowSweep, doc: Document, out: Path) -> None:
    found = search_mod.read_search(sweep)
    doc.heading("Runs")
    if sweep.excluded:
        doc.warning(f"Left out of the plots and the importance (did not finish): {len(sweep.excluded)} trial(s).")
        doc.table(tables.excluded_table(sweep), out)
    params = list(found.space)
    doc.paragraph(f"Searched: {', '.join(f'{k} ({s.text()})' for k, s in found.space.items()) or 'nothing'}; "
                  f"objective {found.objective or 'unknown'} (best value of each trial).")
    values = {r: search_mod.objective_value(sweep, r, found.objective) for r in sweep.trials["run_id"]}
    doc.table(tables.trials_table(sweep, params, found.objective, values), out)
    finished = found.values.dropna(subset=[found.objective]) if found.objective else found.values
    metrics = [schema.TEST_PREFIX + m for m in SEARCH_PLOT_METRICS if schema.TEST_PREFIX + m in sweep.metrics.columns]
    plotted = finished.join(sweep.metrics[metrics], on="run_id") if metrics else finished
    if params and len(plotted) > 0:
        shown = [found.objective] + metrics if found.objective else metrics
        logs = {k for k, s in found.space.items() if s.kind == "log"}
        doc.figure(figures.save(figures.metric_vs_params(plotted, params, shown, logs), out, "metrics_vs_params"),
                   "Metrics against the searched parameters")
    result = search_mod.study(found) if params and found.objective else None
    importance = search_mod.importances(result) if result is not None else {}
    if importance:
        doc.figure(figures.save(figures.importance_figure(importance, found.objective), out, "importance"),
                   "Parameter importance (Optuna fANOVA on the trials read back from MLflow)")
        doc.figure(figures.save(figures.parallel_coordinates(result, found.objective), out, "parallel_coordinates"),
                   "Parallel coordinates")
    else:
        doc.paragraph(f"No parameter importance or parallel coordinates: fewer than two completed trials, or "
                      f"every trial has the same {found.objective}.")
    _cost(sweep, doc, out, group_by_variant=False)


def ea_classifiers(sweep) -> dict[str, int]:
    """Identity of the EA classifier -> how many usable runs it scored (runs that predate the
    param are not counted)."""
    if schema.PARAM_EA_CLASSIFIER not in sweep.params.columns:
        return {}
    ids = sweep.params.loc[sweep.params.index.isin(sweep.usable), schema.PARAM_EA_CLASSIFIER].dropna()
    return {str(k): int(v) for k, v in ids.astype(str).value_counts().items()}
