"""``analysis/`` on an MLflow store that the tests fill themselves: a planted ablation sweep
(clear difference, identical variant, a failed run, a missing run) and a planted alpha
search; the report is rebuilt from the store alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from statsmodels.stats.multitest import multipletests

from analysis import predictions as P
from analysis.report import REPORT_ARTIFACT_DIR, build_report
from analysis.runs import ABLATIONS, ALPHA_SEARCH
from sevlm.emotions import EMOTIONS
from sevlm.metrics.corpus_stats import BLEU_MATCH_COLUMNS, BLEU_TOTAL_COLUMNS, CIDER, HYP_LEN, INDEX_NAME, REF_LEN, ROUGE_L
from sevlm.training.evaluation import PREDICTION_COLUMNS
from sevlm.variants import FULL
from trainables import mlflow_store
from trainables import tracking_schema as schema

N_PAINTINGS = 120
SEEDS = [0, 1, 2]
GOOD, BAD = 0.6, 0.35  # unigram precision of the planted systems
# variant -> (its quality, the seed that plants its statistics): "no_vad_features" and
# "no_vad_head" reuse the full model's statistics exactly (identical systems; the second loses
# a seed), "no_contrastive" is clearly worse.
PLANTED = {FULL: (GOOD, 0), "no_vad_features": (GOOD, 0), "no_vad_head": (GOOD, 0), "no_contrastive": (BAD, 1),
           "baseline": (BAD, 2), "alpha_0.5": (0.55, 3), "alpha_4": (0.5, 4)}
FAILED = ("baseline", 2)
MISSING = ("no_vad_head", 2)
ONE_SEED = "alpha_4"  # the grid runs it at seed 0 only, as sweeps/ablations.py does the alpha grid
OTHER_CLASSIFIER = ("alpha_0.5", 1)  # scored by another EA classifier than every other run


def planted_predictions(quality: float, seed: int) -> pd.DataFrame:
    """Per-painting predictions whose n-gram precisions, METEOR, ACC ... follow ``quality``."""
    rng = np.random.default_rng(seed)
    hyp = rng.integers(8, 14, N_PAINTINGS)
    frame = pd.DataFrame({INDEX_NAME: [f"p{i:03d}" for i in range(N_PAINTINGS)]})
    dominant = rng.choice(EMOTIONS, N_PAINTINGS).astype(object)
    dominant[rng.random(N_PAINTINGS) < 0.15] = None  # no dominant emotion: out of ACC and EA
    hit = rng.random(N_PAINTINGS) < quality
    frame[P.DOMINANT] = dominant
    frame[P.PREDICTED] = np.where(hit, dominant, EMOTIONS[0])
    frame[P.CLOSED_SET] = np.where(rng.random(N_PAINTINGS) < quality, dominant, EMOTIONS[1])
    frame[P.EA_CORRECT] = [None if d is None else bool(h) for d, h in zip(dominant, rng.random(N_PAINTINGS) < quality)]
    frame["explanation"] = [f"planted explanation {i}" for i in range(N_PAINTINGS)]
    for k, (match, total) in enumerate(zip(BLEU_MATCH_COLUMNS, BLEU_TOTAL_COLUMNS)):
        frame[total] = np.maximum(hyp - k, 0)
        frame[match] = rng.binomial(frame[total], quality ** (k + 1))
    frame[HYP_LEN] = hyp
    frame[REF_LEN] = hyp + rng.integers(-2, 3, N_PAINTINGS)
    frame[P.METEOR] = np.clip(rng.normal(quality / 2, 0.05, N_PAINTINGS), 0, 1)
    frame[ROUGE_L] = np.clip(rng.normal(quality, 0.1, N_PAINTINGS), 0, 1)
    frame[CIDER] = np.clip(rng.normal(quality, 0.2, N_PAINTINGS), 0, None)
    frame[P.NONWORDS] = rng.binomial(hyp, 0.05)
    frame[P.WORDS] = hyp
    return frame.reindex(columns=PREDICTION_COLUMNS)


def _store(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_store.open_tracking_store(uri)
    experiment_id = mlflow_store.get_or_create_experiment(client, schema.DEFAULT_EXPERIMENT, uri)
    return uri, client, experiment_id


def _parent(client, experiment_id: str, name: str, kind: str, tags: dict[str, str]) -> str:
    base = {schema.TAG_ROLE: schema.ROLE_PARENT, schema.TAG_SWEEP_NAME: name, schema.TAG_SWEEP_KIND: kind}
    run = client.create_run(experiment_id, tags={**base, **tags}, run_name=name)
    client.set_terminated(run.info.run_id, schema.STATUS_FINISHED)
    return run.info.run_id


def _trial(client, experiment_id, parent_id, name, index, tags, params, metrics, predictions, status, tmp_path):
    run_tags = {schema.TAG_ROLE: schema.ROLE_TRIAL, schema.TAG_SWEEP_NAME: name, schema.MLFLOW_PARENT_RUN_ID: parent_id,
                schema.TAG_TRIAL_ID: f"t{index}", schema.TAG_TRIAL_INDEX: str(index), **tags}
    run_id = client.create_run(experiment_id, tags=run_tags, run_name=schema.trial_run_name(name, f"t{index}")).info.run_id
    client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                     params=[Param(k, v) for k, v in params.items()])
    if predictions is not None:
        folder = tmp_path / "artifacts" / run_id
        folder.mkdir(parents=True)
        path = folder / Path(schema.ARTIFACT_PREDICTIONS_TEST).name
        predictions.to_csv(path, index=False)
        client.log_artifact(run_id, str(path), str(Path(schema.ARTIFACT_PREDICTIONS_TEST).parent))
    client.set_terminated(run_id, status)
    return run_id


def _test_metrics(frame: pd.DataFrame) -> dict[str, float]:
    stats = P.per_painting_frame(frame)
    out = {schema.TEST_PREFIX + m.name: P.SCALE * m.corpus(m.corpus.select(stats)) for m in P.METRICS.values()}
    return {**out, schema.TEST_PREFIX + P.UNIQUE: 100.0, schema.TEST_PREFIX + P.PAINTINGS: float(N_PAINTINGS),
            schema.THROUGHPUT_METRIC: 50.0, schema.PEAK_MEMORY_METRIC: 900.0}


@pytest.fixture(scope="module")
def ablation_store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ablation-store")
    uri, client, experiment_id = _store(tmp_path)
    grid = {"variants": {v: {} for v in PLANTED}, "seeds": SEEDS, "seed_counts": {ONE_SEED: 1}}
    parent = _parent(client, experiment_id, "planted", ABLATIONS, {schema.TAG_GRID: json.dumps(grid)})
    index = 0
    for variant, (quality, plant_seed) in PLANTED.items():
        for seed in SEEDS:
            if (variant, seed) == MISSING or (variant == ONE_SEED and seed > 0):
                continue
            failed = (variant, seed) == FAILED
            frame = planted_predictions(quality, 100 * plant_seed + seed)
            tags = {schema.TAG_VARIANT: variant, schema.TAG_SEED: str(seed)}
            if failed:
                tags[schema.TAG_ERROR] = "planted crash"
            classifier = "other-classifier" if (variant, seed) == OTHER_CLASSIFIER else "shared-classifier"
            _trial(client, experiment_id, parent, "planted", index, tags,
                   {"seed": str(seed), schema.PARAM_EA_CLASSIFIER: classifier},
                   {} if failed else _test_metrics(frame), None if failed else frame,
                   schema.STATUS_FAILED if failed else schema.STATUS_FINISHED, tmp_path)
            index += 1
    out = tmp_path / "report"
    build_report("planted", uri, out_dir=out)
    return uri, client, parent, out


def test_planted_difference_gets_stars_and_identical_variant_is_not_significant(ablation_store):
    _, _, _, out = ablation_store
    family = pd.read_csv(out / "comparisons.csv")
    assert family["in_family"].all() and set(family["metric"]) == set(P.STARRED)
    worse = family[family["variant"] == "no_contrastive"]
    # 3 seeds: the seeds' part has 2 df, so even a planted 12-20 point gap gets ** or ***
    assert worse["stars"].isin(["**", "***"]).all() and (worse["delta"] > 0).all() and (worse["p_holm"] < 0.01).all()
    assert (worse["seed_df"] == 2).all() and worse["testable"].all()
    assert all(len(d.split(";")) == 3 for d in worse["seed_deltas"])  # the per-seed differences, shown
    assert (worse["ci_low"] > 0).all() and (worse["ci_low"] < worse["delta"]).all()
    same = family[family["variant"] == "no_vad_features"]
    assert (same["stars"] == "n.s.").all() and np.allclose(same["delta"], 0) and (same["p_raw"] == 1).all()
    # two paired seeds (one missing) and one seed (the alpha grid): not testable, no p, no stars
    for variant, seeds in (("no_vad_head", 2), (ONE_SEED, 1)):
        rows = family[family["variant"] == variant]
        assert (rows["stars"] == "not testable").all() and rows["p_raw"].isna().all() and rows["p_holm"].isna().all()
        assert rows["not_testable_reason"].str.contains(f"{seeds} paired seed").all()
        assert (rows["ar_seeds"] == seeds).all()  # the per-seed test, conditional on the models, stays
    # secondary: every paired seed significant for the planted difference, none for the identical one
    assert (worse["ar_significant"] == worse["ar_seeds"]).all() and (same["ar_significant"] == 0).all()
    # Holm over the family's testable comparisons, as statsmodels computes it
    testable = family[family["testable"]]
    assert np.allclose(testable["p_holm"], multipletests(testable["p_raw"], method="holm")[1])
    other = pd.read_csv(out / "comparisons_other.csv")
    assert not other["in_family"].any() and other["stars"].isna().all()
    assert P.ACC in set(other["metric"])
    table = (out / "comparisons.md").read_text()
    assert "not testable: 2 paired seeds (needs 3)" in table and "t, 2 df (seeds)" in table
    assert "given the trained models" in table
    intervals = pd.read_csv(out / "intervals.csv").set_index(["variant", "metric"])
    assert not intervals.loc[(ONE_SEED, P.BLEU[3]), "seeds_counted"]
    assert intervals.loc[(FULL, P.BLEU[3]), "seeds_counted"]
    assert (intervals["ci_low"] < intervals["score"]).all() and (intervals["score"] < intervals["ci_high"]).all()


def test_failed_and_missing_runs_are_named_and_the_short_variant_flagged(ablation_store):
    _, _, _, out = ablation_store
    report = (out / "report.md").read_text()
    assert "FAILED (planted crash)" in report and "missing: no MLflow run" in report
    excluded = pd.read_csv(out / "excluded.csv")
    assert {(r.variant, int(r.seed)) for r in excluded.itertuples()} == {FAILED, MISSING}
    assert "Fewer seeds than the others" in report and "w/o VAD head: 2 of 3" in report
    # a variant the grid ran at one seed by design is flagged as such, never as missing
    assert "α = 4: 1 of 3" in report and "at fewer seeds by design" in report
    assert "EA was scored by 2 different EA classifiers" in report and "other-classifier in 1 runs" in report
    assert "generalised t over seeds x paintings" in report and "Not testable: fewer than 3 seeds" in report
    assert "conditional on the trained models" in report and f"Test paintings: {N_PAINTINGS}" in report


def test_every_table_and_figure_is_written_and_logged_to_the_parent_run(ablation_store):
    _, client, parent, out = ablation_store
    stems = ["table1", "comparisons", "comparisons_other", "variants", "per_seed", "cost", "excluded"]
    expected = [f"{s}.{x}" for s in stems for x in ("csv", "md", "tex")]
    expected += [f"{f}.{x}" for f in ("fig5", "alpha") for x in ("png", "pdf")] + ["report.md", "report.html"]
    for name in expected:
        assert (out / name).stat().st_size > 0, name
    assert not (out / "fig6.png").exists()  # no variant of Fig. 6 was run
    assert "\\toprule" in (out / "table1.tex").read_text()
    assert "not logged" in (out / "cost.md").read_text()
    logged = {Path(a.path).name for a in client.list_artifacts(parent, REPORT_ARTIFACT_DIR)}
    assert set(expected) <= logged
    assert "data:image/png;base64," in (out / "report.html").read_text()


def _search_store(tmp_path: Path) -> tuple[str, str]:
    uri, client, experiment_id = _store(tmp_path)
    space = {"model.alpha": "log:0.1:10", "model.emotion_encoder_layers": "int:0:6",
             "model.neg_wrong_emotion": "choice:true,false"}
    objective = schema.VAL_PREFIX + P.BLEU[3]
    parent = _parent(client, experiment_id, "search", ALPHA_SEARCH,
                     {schema.TAG_SEARCH_SPACE: json.dumps(space), schema.TAG_METRIC: objective})
    rng = np.random.default_rng(0)
    for i in range(8):
        alpha, layers, negative = float(np.exp(rng.uniform(np.log(0.1), np.log(10)))), int(rng.integers(0, 7)), bool(i % 2)
        value = 5 + 2 * np.log(alpha) + 0.1 * layers
        metrics = {objective: value, schema.BEST_PREFIX + objective: value + 0.5,
                   **{schema.TEST_PREFIX + m: value + j for j, m in enumerate((P.ACC, P.BLEU[3], P.CIDER_METRIC))}}
        status = schema.STATUS_KILLED if i == 7 else schema.STATUS_FINISHED
        _trial(client, experiment_id, parent, "search", i, {},
               {"model.alpha": str(alpha), "model.emotion_encoder_layers": str(layers),
                "model.neg_wrong_emotion": str(negative)}, metrics, None, status, tmp_path)
    return uri, parent


def test_alpha_search_report_has_importance_and_parallel_coordinates(tmp_path):
    uri, _ = _search_store(tmp_path)
    out = build_report("search", uri, out_dir=tmp_path / "report")
    for name in ("metrics_vs_params.png", "importance.png", "parallel_coordinates.pdf", "trials.csv", "report.html"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "KILLED" in report  # the killed trial is named
    trials = pd.read_csv(out / "trials.csv")
    objective = schema.VAL_PREFIX + P.BLEU[3]
    best = trials.set_index("run")[f"best {objective}"]
    assert len(trials) == 8 and best.is_monotonic_decreasing
    logged = {r.info.run_name: r.data.metrics[schema.BEST_PREFIX + objective]
              for r in mlflow_store.sweep_runs(uri, "search").trials}
    assert np.allclose([logged[name] for name in best.index], best)  # the best value, not the last one


def test_cli_rebuilds_from_the_store_alone_without_ray(ablation_store, tmp_path):
    uri, _, _, _ = ablation_store
    code = ("import sys, analysis.__main__ as m; rc = m.main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "planted", "--tracking-uri", uri, "--out",
                             str(tmp_path / "cli"), "--no-log"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli" / "report.md").stat().st_size > 0
    from analysis.__main__ import main

    assert main(["nope", "--tracking-uri", uri, "--no-log"]) == 2


def test_a_variant_without_a_seed_in_common_is_not_testable():
    from analysis import significance
    from analysis.predictions import METRICS, align

    frames = {f"{v}-{s}": P.per_painting_frame(planted_predictions(q, s)) for v, q, s in
              ((FULL, GOOD, 0), (FULL, GOOD, 1), (FULL, GOOD, 2), ("no_contrastive", BAD, 3), ("no_contrastive", BAD, 4))}
    pairs = {(name.rsplit("-", 1)[0], int(name.rsplit("-", 1)[1])): name for name in frames}
    seeds = {FULL: [0, 1, 2], "no_contrastive": [3, 4]}
    settings = significance.TestSettings(n_resamples=99, seed=0)
    row = significance._compare_one(pairs, align(frames), FULL, "no_contrastive", [], seeds, METRICS[P.BLEU[3]],
                                     settings, True)
    assert not row["testable"] and row["not_testable_reason"] == "no seed in common with the reference"
    assert np.isnan(row["p_raw"]) and row["seeds"] == "0,1,2 vs 3,4" and row["delta"] > 0 and row["ar_seeds"] is None
