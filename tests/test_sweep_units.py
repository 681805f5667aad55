"""The pieces of the sweep layer, without a Ray cluster (seconds each): search-space specs,
resources, strategies, the model rules, the sweep outcome from a (fake) ResultGrid, the
console filter, and the MLflow writer driven by fake trials against a temporary SQLite
store."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
from pathlib import Path

import pytest

from sevlm.config import apply_overrides, tiny, validate
from sevlm.variants import ALPHA_VARIANTS, BASELINE, FIGURES, FULL, LABELS, VARIANTS
from sweeps import SweepError
from sweeps.space import base_point, check_space, corners, parse_param_spec, parse_space
from sweeps.strategies import Grid, GridFlags, TPEFlags, strategy_from_dict
from trainables import tracking_schema as schema
from trainables.settings import TrialSettings

# ------------------------------------------------------------------------- space


@pytest.mark.parametrize("text, kind, low, high, choices", [
    ("log:0.1:10", "log", 0.1, 10.0, ()),
    ("float:0:1", "float", 0.0, 1.0, ()),
    ("int:0:6", "int", 0.0, 6.0, ()),
    ("int:3:3", "int", 3.0, 3.0, ()),
    ("choice:true,false", "choice", None, None, (True, False)),
    ("choice:1,2.5,adam", "choice", None, None, (1, 2.5, "adam")),
])
def test_space_specs_parse(text, kind, low, high, choices):
    spec = parse_param_spec("k", text)
    assert (spec.kind, spec.low, spec.high, spec.choices) == (kind, low, high, choices)
    assert parse_param_spec("k", spec.text()) == spec  # the text round-trips


@pytest.mark.parametrize("text, message", [
    ("log:5:1", "empty range"), ("float:1:1", "empty range"), ("int:4:2", "empty range"),
    ("log:0:1", "LOW > 0"), ("log:a:1", "numbers"), ("log:1", "LOW:HIGH"), ("float:1:inf", "finite"),
    ("choice:", "at least one"), ("choice:1,1", "repeated"), ("uniform:1:2", "unknown kind"),
])
def test_bad_space_specs(text, message):
    with pytest.raises(SweepError, match=message):
        parse_param_spec("k", text)


def test_space_checks_keys_and_types():
    flat = {"model.alpha": 2.0, "model.emotion_encoder_layers": 3, "model.use_vad_head": True, "eval.decoding": "nucleus"}
    assert parse_space({"model.alpha": "off"}) == {}
    check_space(parse_space({"model.alpha": "log:0.1:10", "eval.decoding": "choice:greedy,nucleus"}), flat)
    for texts, message in [
        ({"alpha": "log:0.1:1"}, "did you mean model.alpha"),
        ({"model.use_vad_head": "log:0.1:1"}, "switch"),
        ({"model.emotion_encoder_layers": "float:0:6"}, "integer"),
        ({"model.emotion_encoder_layers": "choice:1,2.5"}, "every choice must be an integer"),
        ({"model.alpha": "choice:1,x"}, "every choice must be a number"),
        ({"eval.decoding": "int:0:1"}, "not numeric"),
        ({"model.alpha": "off"}, "empty"),
    ]:
        with pytest.raises(SweepError, match=message):
            check_space(parse_space(texts), flat)


def test_paper_point_and_corners():
    space = parse_space({"model.alpha": "log:0.1:10", "model.emotion_encoder_layers": "int:0:6",
                         "model.neg_other_image": "choice:true,false"})
    assert base_point(space, {"model.alpha": 2, "model.emotion_encoder_layers": 3, "model.neg_other_image": True}) == {
        "model.alpha": 2.0, "model.emotion_encoder_layers": 3, "model.neg_other_image": True}
    low, high = corners(space)
    assert low == {"model.alpha": 0.1, "model.emotion_encoder_layers": 0, "model.neg_other_image": True}
    assert high == {"model.alpha": 10.0, "model.emotion_encoder_layers": 6, "model.neg_other_image": False}


# -------------------------------------------------------------------- model rules


def test_model_rules_live_in_sevlm_config():
    cfg = tiny()
    validate(cfg)
    validate(cfg.model)
    with pytest.raises(ValueError, match="at least one negative"):
        validate(apply_overrides(cfg, {"model.neg_wrong_emotion": False, "model.neg_other_image": False}))
    validate(apply_overrides(cfg, {"model.use_contrastive": False, "model.neg_wrong_emotion": False,
                                   "model.neg_other_image": False}))
    for layers in (-1, 7):
        with pytest.raises(ValueError, match="0..6"):
            validate(apply_overrides(cfg, {"model.emotion_encoder_layers": layers}))


# ---------------------------------------------------------------------- resources


def test_resources_fill_the_cluster_and_refuse_the_impossible():
    from sweeps.resources import cluster_capacity, decide_resources

    two_cpus = {"CPU": 2.0}
    r = decide_resources(two_cpus, gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8)
    assert (r.use_gpu, r.concurrency, r.cpus_per_worker) == (False, 2, 0.9)
    r = decide_resources(two_cpus, gpu=None, cpus_per_trial=None, concurrency=1, total_trials=8)
    assert (r.concurrency, r.cpus_per_worker) == (1, 1.9)  # one trial gets both cores
    r = decide_resources({"CPU": 16.0}, gpu=None, cpus_per_trial=None, concurrency=None, total_trials=3)
    assert r.concurrency == 3  # never more than there are trials
    gpus = {"CPU": 8.0, "GPU": 2.0}
    r = decide_resources(gpus, gpu="auto", cpus_per_trial=None, concurrency=None, total_trials=8)
    # by default a GPU trial gets its node's CPUs per GPU (4), less the trial function's 0.1
    assert (r.use_gpu, r.concurrency, r.cpus_per_worker, r.describe()) == (True, 2, 3.9, "one GPU and 4 CPU")
    assert decide_resources(gpus, gpu="off", cpus_per_trial=None, concurrency=None, total_trials=8).concurrency == 8
    assert cluster_capacity([gpus], True, 5.0) == 1  # 2 GPUs, but CPUs for one trial only
    for kwargs, message in [
        (dict(gpu="on"), "no GPU"),
        (dict(concurrency=3), "more than the cluster can run"),
        (dict(cpus_per_trial=1.5, concurrency=2), "more than the cluster can run"),
    ]:
        with pytest.raises(SweepError, match=message):
            decide_resources(two_cpus, **{"gpu": None, "cpus_per_trial": None, "concurrency": None,
                                          "total_trials": 8, **kwargs})
    with pytest.raises(SweepError, match="at least 1"):
        decide_resources({"CPU": 0.5}, gpu=None, cpus_per_trial=None, concurrency=None, total_trials=1)


# --------------------------------------------------------------------- strategies


def _args(**values) -> argparse.Namespace:
    """The flags of both strategies, unset unless given."""
    parser = argparse.ArgumentParser()
    TPEFlags(space={}, default_trials=1).add_flags(parser)
    GridFlags(variants={}, default_seeds=1, quick_variants=(), quick_seeds=1, quick_overrides={}).add_flags(parser)
    args = parser.parse_args([])
    for key, value in values.items():
        setattr(args, key, value)
    return args


def _tiny_flat():
    from sevlm.config import to_flat_dict

    return to_flat_dict(tiny())


def test_tpe_puts_the_paper_point_first_and_sizes_its_sampler():
    flags = TPEFlags(space={"tiny": {"model.alpha": "log:0.1:10", "model.neg_other_image": "choice:true,false"}},
                     default_trials=8, short_names={"model.alpha": "alpha"})
    tpe = flags.build(_args(), "tiny", _tiny_flat(), {})
    assert tpe.paper_point == {"model.alpha": 2.0, "model.neg_other_image": True}
    assert tpe.num_samples() == tpe.total_trials() == 8 and tpe.param_space() == {}
    assert tpe.columns() == {"model.alpha": "alpha", "model.neg_other_image": "neg_other_image"}
    searcher = tpe.search_alg("val/rouge_l")
    assert searcher._points_to_evaluate == [tpe.paper_point]
    assert searcher._sampler._n_startup_trials == 4
    assert tpe.scheduler("val/rouge_l") is None
    assert tpe.trial_tags({"model.alpha": 2.0000000001, "model.neg_other_image": True}) == {
        schema.TAG_IS_PAPER_CONFIG: "true"}
    assert tpe.trial_tags({"model.alpha": 3.0, "model.neg_other_image": True})[schema.TAG_IS_PAPER_CONFIG] == "false"
    point_overrides = TrialSettings("s", "/tmp", point_layers=tpe.point_layers()).point_overrides
    assert point_overrides({"model.alpha": 3.0}) == {"model.alpha": 3.0}
    assert tpe.probe_points()[0] == tpe.paper_point and len(tpe.probe_points()) == 3
    params = tpe.parent_params()
    assert params["sweep.searcher"] == "optuna_tpe" and params["sweep.space.model.alpha"] == "log:0.1:10.0"
    assert json.loads(tpe.parent_tags()[schema.TAG_SEARCH_SPACE]) == tpe.space
    assert strategy_from_dict(tpe.to_dict()) == tpe

    asha = flags.build(_args(asha=True, asha_grace_period=2, paper_first=False, num_trials=3),
                       "tiny", _tiny_flat(), {})
    assert asha.paper_point == {} and not asha.search_alg("val/acc")._points_to_evaluate
    from ray.tune.schedulers import ASHAScheduler

    assert isinstance(asha.scheduler("val/acc"), ASHAScheduler)
    assert asha.parent_params()["sweep.scheduler"] == "asha" and asha.parent_params()["sweep.asha_grace_period"] == 2
    for args, fixed, message in [
        (_args(num_trials=0), {}, "--num-trials"),
        (_args(space=["model.alpha=log:3:10"]), {}, "paper's configuration is outside"),
        (_args(), {"model.alpha": 1.0}, "both searched"),
        (_args(asha_reduction_factor=1), {}, "reduction"),
    ]:
        with pytest.raises(SweepError, match=message):
            flags.build(args, "tiny", _tiny_flat(), fixed)


def tune_order(grid: Grid) -> list[tuple[str, int]]:
    """The (variant, seed) of each trial, in the order Tune creates them from the strategy."""
    from ray.tune.experiment import Experiment

    generator = grid.search_alg("val/acc")
    generator.add_configurations([Experiment("x", run=lambda c: None, config=grid.param_space(),
                                             num_samples=grid.num_samples())])
    order = []
    while (trial := generator.next_trial()) is not None:
        order.append((trial.config[Grid.VARIANT_KEY], trial.config[Grid.SEED_KEY]))
    return order


def test_grid_is_every_variant_at_every_seed():
    from ray.tune.experiment import Experiment

    flags = GridFlags(variants=VARIANTS, default_seeds=3, quick_variants=("baseline", "full"), quick_seeds=2,
                      quick_overrides={"train.max_steps": 4})
    grid = flags.build(_args(), "tiny", _tiny_flat(), {})
    assert list(grid.variants) == list(VARIANTS) and grid.seeds == [0, 1, 2]
    assert grid.total_trials() == 36 == grid.num_samples() == len(grid.points())
    config = {Grid.VARIANT_KEY: "no_vad_head", Grid.SEED_KEY: 2}
    point_overrides = TrialSettings("s", "/tmp", point_layers=grid.point_layers()).point_overrides
    assert point_overrides(config) == {**VARIANTS["no_vad_head"], "seed": 2}
    assert grid.trial_tags(config) == {schema.TAG_VARIANT: "no_vad_head", schema.TAG_SEED: "2"}
    assert strategy_from_dict(grid.to_dict()) == grid
    assert grid.parent_params()["sweep.variants"].split(",") == list(VARIANTS)

    # Tune runs every variant at seed 0 before any at seed 1: an interrupted sweep is paired.
    small = flags.build(_args(variants="full,baseline", seeds=2), "tiny", _tiny_flat(), {})
    assert list(small.variants) == ["baseline", "full"]  # the paper's order, whatever the flag's
    assert tune_order(small) == [("baseline", 0), ("full", 0), ("baseline", 1), ("full", 1)]
    # The grid's generator holds the sweep's concurrency (Tune applies it to Searchers only).
    generator = small.search_alg("val/acc", max_concurrent=1)
    generator.add_configurations([Experiment("x", run=lambda c: None, config=small.param_space(),
                                             num_samples=small.num_samples())])
    first = generator.next_trial()
    assert first is not None and generator.next_trial() is None  # one running: no second trial yet
    generator.on_trial_complete(first.trial_id)
    assert generator.next_trial() is not None

    # Variants declared with fewer seeds run at the first N only, unless --all-seeds.
    fewer = dataclasses.replace(flags, default_seed_counts={"full": 1, "no_vad_head": 5})
    grid = fewer.build(_args(variants="baseline,full,no_vad_head"), "tiny", _tiny_flat(), {})
    assert grid.seed_counts == {"full": 1}  # 5 >= 3 seeds: no reduction
    assert tune_order(grid) == [("baseline", 0), ("full", 0), ("no_vad_head", 0), ("baseline", 1),
                                ("no_vad_head", 1), ("baseline", 2), ("no_vad_head", 2)]
    assert grid.total_trials() == 7 and "full at 1" in grid.describe()
    assert strategy_from_dict(grid.to_dict()) == grid
    every = fewer.build(_args(variants="baseline,full", all_seeds=True), "tiny", _tiny_flat(), {})
    assert every.seed_counts == {} and every.total_trials() == 6

    quick = flags.build(_args(quick=True), "tiny", _tiny_flat(), {})
    assert list(quick.variants) == ["baseline", "full"] and quick.seeds == [0, 1]
    assert flags.extra_overrides(_args(quick=True)) == {"train.max_steps": 4}
    with pytest.raises(SweepError, match="unknown variant.*nope.*known: baseline, full, no_vad_features"):
        flags.build(_args(variants="full,nope"), "tiny", _tiny_flat(), {})
    with pytest.raises(SweepError, match="--seeds"):
        flags.build(_args(seeds=0), "tiny", _tiny_flat(), {})
    with pytest.raises(SweepError, match="model.alpha both fixed"):
        flags.build(_args(), "tiny", _tiny_flat(), {"model.alpha": 3.0})


def test_the_papers_variants():
    assert list(VARIANTS)[:2] == [BASELINE, FULL] and set(LABELS) == set(VARIANTS)
    assert {v for names in FIGURES.values() for v in names} == set(VARIANTS)
    cfg = tiny()
    for name, overrides in VARIANTS.items():
        validate(apply_overrides(cfg, overrides))
        assert set(overrides) == set(VARIANTS[FULL]), name  # complete, never relative to the preset
    full = apply_overrides(cfg, VARIANTS[FULL]).model
    assert (full.alpha, full.emotion_encoder_layers, full.use_contrastive, full.use_vad_head,
            full.use_vad_features, full.neg_wrong_emotion, full.neg_other_image) == (2.0, 3, True, True, True, True, True)
    base = apply_overrides(cfg, VARIANTS[BASELINE]).model
    assert not (base.use_vad_features or base.use_vad_head or base.use_contrastive)
    assert sorted(ALPHA_VARIANTS) == [0.5, 1.0, 2.0, 4.0, 8.0] and ALPHA_VARIANTS[2.0] == FULL
    for alpha, name in ALPHA_VARIANTS.items():
        assert VARIANTS[name]["model.alpha"] == alpha
        assert {k: v for k, v in VARIANTS[name].items() if k != "model.alpha"} == {
            k: v for k, v in VARIANTS[FULL].items() if k != "model.alpha"}
    # one change from the full model for each figure's variant
    for name in FIGURES["fig5"][1:] + FIGURES["fig6"][1:] + FIGURES["fig7"][1:]:
        assert sum(VARIANTS[name][k] != VARIANTS[FULL][k] for k in VARIANTS[FULL]) == 1, name


# ------------------------------------------------------------------------ summary


class _Result:
    def __init__(self, trial_id, config, reports, error=None, done=True):
        import pandas as pd

        self.metrics = {"trial_id": trial_id, "config": config, **(reports[-1] if reports else {})}
        if done and reports:
            self.metrics["done"] = True  # Tune's mark of a trial that ended
        self.config = config
        self.error = error
        self.metrics_dataframe = pd.DataFrame(reports) if reports else None


def _final(value, **final):
    from trainables import report_protocol as rp

    return rp.final_report(None, 8, final, stopped_early=False, metric="val/rouge_l", metric_value=value)


def test_the_outcome_comes_from_the_result_grid():
    from sweeps.summary import sweep_outcome

    results = [
        _Result("t0", {"ablation": "full"}, [{"val/rouge_l": 10.0}, {"val/rouge_l": 30.0}, _final(30.0, **{"test/acc": 50.0})]),
        _Result("t1", {"ablation": "baseline"}, [{"val/rouge_l": 40.0}, {"val/rouge_l": 20.0}]),  # stopped by ASHA
        _Result("t2", {"ablation": "no_vad_head"}, [], error=RuntimeError("boom\nout of memory")),
        _Result("t3", {"ablation": "alpha_1"}, [{"val/rouge_l": 25.0}, _final(float("nan"), **{"test/acc": 60.0})]),
    ]
    outcome = sweep_outcome(results, "val/rouge_l", total_trials=4)
    assert outcome.counts == {"total": 4, "finished": 2, "failed": 1, "killed": 1,
                              "planned": 4, "stopped_early": 1, "interrupted": 0, "not_started": 0}
    assert [t.state for t in outcome.trials] == ["finished", "stopped early", "failed", "finished"]
    assert [t.status for t in outcome.trials] == ["FINISHED", "KILLED", "FAILED", "FINISHED"]
    assert outcome.trials[2].error == "out of memory"
    assert [t.value for t in outcome.trials] == [30.0, 40.0, None, 25.0]
    assert outcome.best.trial_id == "t1"  # the highest value any trial reported
    assert outcome.trials[0].final == {"test/acc": 50.0} and outcome.trials[1].final == {}
    assert not outcome.interrupted and outcome.status == "FINISHED"
    record = outcome.best_record("s", {"t1": "run1"})
    assert record["run_id"] == "run1" and record["metrics"] == {"val/rouge_l": 40.0}
    rows = outcome.rows({"t0": "run0"})
    assert rows[0] == {"trial_id": "t0", "status": "FINISHED", "state": "finished", "run_id": "run0",
                       "ablation": "full", "val/rouge_l": 30.0, "test/acc": 50.0}

    # interrupted: a trial stopped in the middle (not done), one stopped before its first
    # evaluation, and trials never created: interrupted / not started, not "stopped early"
    running = _Result("t4", {"ablation": "full"}, [{"val/rouge_l": 5.0, "step": 4}], done=False)
    waiting = _Result("t5", {"ablation": "baseline"}, [], done=False)
    interrupted = sweep_outcome(results[:2] + [running, waiting], "val/rouge_l", total_trials=6)
    assert interrupted.interrupted and interrupted.status == "KILLED"
    assert [t.status for t in interrupted.trials[-2:]] == ["KILLED", "KILLED"]
    assert [t.state for t in interrupted.trials] == ["finished", "stopped early", "interrupted", "not started"]
    counts = interrupted.counts
    assert (counts["total"], counts["planned"], counts["interrupted"], counts["not_started"]) == (4, 6, 1, 3)
    import io

    from sweeps.summary import print_counts

    printed = io.StringIO()
    print_counts("s", interrupted, printed)
    assert printed.getvalue() == ("Sweep s: 1 finished, 0 failed, 1 stopped early, 1 interrupted, "
                                  "3 not started (of 6 trials).\n")
    assert sweep_outcome(results[:1], "val/rouge_l", 4).interrupted
    failed = sweep_outcome(results[2:3], "val/rouge_l", 1)
    assert failed.status == "FAILED" and failed.best is None


def test_console_drops_only_the_noise(capsys):
    import sys

    from sweeps.console import quiet_console

    with quiet_console(verbose=False):
        print("== sweep table")
        sys.stdout.write("\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started on node: x")
        sys.stdout.write(" with address y\n")
        print("summary", end="", flush=True)
    assert capsys.readouterr().out == "== sweep table\nsummary"
    with quiet_console(verbose=True):
        print("8 PYTHON worker processes have been started on node: x")
    assert "worker processes" in capsys.readouterr().out


class _TuneTrial:
    def __init__(self, trial_id, status, last_result=None):
        self.trial_id, self.status, self.last_result, self.config = trial_id, status, last_result or {}, {"a": 1.0}


def test_the_last_table_says_what_became_of_each_trial():
    # Tune calls a finished trial, one ASHA stopped, and those an interrupted sweep stopped or
    # never started all TERMINATED; the table says which, and counts the trials not created yet.
    import io

    from sweeps.progress import ProgressTable
    from trainables import report_protocol as rp

    out = io.StringIO()
    table = ProgressTable("s", total_trials=6, columns={"a": "a"}, metric="val/rouge_l", interval=1e9, stream=out)
    final = {**_final(30.0, **{"test/acc": 50.0}), "step": 8, "done": True}
    trials = [_TuneTrial("t0", "RUNNING", {"val/rouge_l": 20.0, "step": 4}),
              _TuneTrial("t1", "RUNNING", {"val/rouge_l": 10.0, "step": 4}),
              _TuneTrial("t2", "RUNNING", {"val/rouge_l": 5.0, "step": 4}),
              _TuneTrial("t3", "PENDING")]
    table.print(trials)
    assert [line.split()[1] for line in out.getvalue().splitlines()[3:7]] == ["running"] * 3 + ["pending"]
    trials[0].last_result, trials[0].status = final, "TERMINATED"
    table.on_trial_complete(0, trials, trials[0])
    trials[1].last_result = {**trials[1].last_result, "done": True}
    trials[1].status = "TERMINATED"
    table.on_trial_complete(0, trials, trials[1])  # stopped by ASHA: no final report
    assert rp.is_final(trials[0].last_result)
    # Ctrl-C: Tune stops the running trial and the pending one, and calls them TERMINATED
    for trial in trials[2:]:
        trial.status = "TERMINATED"
    table.stream = out = io.StringIO()
    table.on_experiment_end(trials)
    text = out.getvalue()
    head, _, _, *rows = text.strip().splitlines()
    assert "sweep interrupted" in head
    assert "(1 finished, 1 interrupted, 3 not started, 1 stopped early)" in head  # 2 never created
    assert [r.split()[0] for r in rows] == ["t0", "t1", "t2", "t3"]
    assert [[c for c in r.split("  ") if c][1].strip() for r in rows] == [
        "finished", "stopped early", "interrupted", "not started"]
    assert "TERMINATED" not in text and "terminated" not in text
    # a sweep whose trials all ended says so (a trial that ended under an earlier driver of
    # the sweep, restored by --resume, is known by Tune's done flag)
    out = io.StringIO()
    done = ProgressTable("s", total_trials=2, columns={}, metric="val/rouge_l", interval=1e9, stream=out)
    ended = [_TuneTrial("t0", "TERMINATED", final), _TuneTrial("t1", "ERROR", {"step": 2})]
    done.on_trial_error(0, ended, ended[1])
    done.stream = out = io.StringIO()
    done.on_experiment_end(ended)
    assert out.getvalue().splitlines()[0].endswith("(1 failed, 1 finished) | 0.0 min | sweep ended")


def test_tunes_own_resume_hint_and_fetch_traceback_stay_behind_verbose():
    # What Ray Tune logs when a sweep is interrupted, through Ray's own log handlers (the
    # sweep prints its own --resume command; Tune's Tuner.restore(...) is not how to continue).
    import io
    import logging

    from sweeps.console import quiet_console

    import ray  # noqa: F401 - configures the "ray" logger and its handler

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(handler)
    tune_log = logging.getLogger("ray.tune.tune")
    fetch_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    messages = [
        (tune_log, "Experiment has been interrupted, but the most recent state was saved.\n"
                   "Resume experiment with: Tuner.restore(path=\"/x/s\", trainable=...)"),
        (fetch_log, "Failed to fetch metrics for 1 trial(s):\n- trial_1: FileNotFoundError('progress.csv')"),
    ]
    try:
        with quiet_console(verbose=False):
            for logger, message in messages:
                logger.warning(message)
            tune_log.warning("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run.")
        assert "Tuner.restore" not in stream.getvalue() and "FileNotFoundError" not in stream.getvalue()
        assert "Stop signal received" in stream.getvalue()  # what happened stays on the console
        with quiet_console(verbose=True):
            for logger, message in messages:
                logger.warning(message)
        assert "Tuner.restore" in stream.getvalue() and "Failed to fetch metrics" in stream.getvalue()
    finally:
        ray_logger.removeHandler(handler)


# ----------------------------------------------------------------- MLflow writer


class _Trial:
    def __init__(self, trial_id, config, error=None):
        self.trial_id, self.config, self.status, self.last_result, self._error = trial_id, config, "RUNNING", {}, error

    def get_error(self):
        return self._error


def _evaluation(step, value, session="w1", start=0, best=True, checkpoint=None, config=None, replay=()):
    from trainables import report_protocol as rp

    report = rp.evaluation_report(
        rp.WorkerSession(session, start, "10.0.0.1", "node-a", "cpu"), step,
        {"val/rouge_l": value, "train/loss": 1.0 / step, "epoch": float(step // 4)},
        is_best=best, score=value, train_log=[[step - 1, {"train/loss": 1.5}], [step, {"train/loss": 1.2}]],
        config_json=json.dumps(config) if config else None, replay=list(replay),
    )
    if checkpoint:
        report[rp.CHECKPOINT_PATH_KEY] = checkpoint  # as Ray Train's TuneReportCallback adds it
    return report


@pytest.fixture()
def store(tmp_path):
    from trainables.mlflow_store import open_tracking_store
    from trainables.mlflow_writer import MlflowTrialWriter
    from trainables.sweep_tracking import SweepTracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = Grid(variants={"full": VARIANTS[FULL], "baseline": VARIANTS[BASELINE]}, seeds=[0, 1])
    tracking = SweepTracking(uri, "e", "s", "ablations", str(tmp_path / "sweep"))
    _, parent_id = tracking.open_parent_run(
        metric="val/rouge_l", params={"sweep.kind": "ablations"}, tags=grid.parent_tags(), spec={"name": "s"},
    )
    writer = MlflowTrialWriter(tracking, storage_path=str(tmp_path), metric="val/rouge_l", trial_tags=grid.trial_tags)
    return tracking, open_tracking_store(uri), writer, parent_id


def _steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_mlflow_writer_records_fake_trials(store, tmp_path):
    from trainables import mlflow_store
    from trainables import report_protocol as rp
    from trainables.mlflow_queue import QUEUE_ARTIFACTS, QUEUE_FILE

    tracking, client, writer, parent_id = store
    final_dir = tmp_path / "final"
    (final_dir / "predictions").mkdir(parents=True)
    (final_dir / "predictions" / "test.csv").write_text("painting_id,dominant_emotion\np1,awe\n")
    (final_dir / schema.ARTIFACT_FINAL_METRICS).write_text("{}")
    (final_dir / "sevlm_final.json").write_text("{}")  # bookkeeping: not an artifact

    done = _Trial("t0", {"ablation": "full", "seed": 0})
    failed = _Trial("t1", {"ablation": "baseline", "seed": 0}, error=RuntimeError("lexicon missing"))
    open_ = _Trial("t2", {"ablation": "full", "seed": 1})
    trials = [done, failed, open_]
    for t in trials:
        writer.on_trial_start(0, trials, t)
    writer.on_trial_result(0, trials, done, _evaluation(4, 10.0, checkpoint="/ckpt/4", config={"seed": 0, "model.alpha": 2.0}))
    writer.on_trial_result(0, trials, done, _evaluation(8, 20.0, checkpoint="/ckpt/8"))
    final = rp.final_report(rp.WorkerSession("w1", 0, "10.0.0.1", "node-a", "cpu"), 8,
                            {"test/acc": 55.0, "best_val/rouge_l": 20.0}, stopped_early=False,
                            metric="val/rouge_l", metric_value=20.0)
    final[rp.CHECKPOINT_PATH_KEY] = str(final_dir)
    writer.on_trial_result(0, trials, done, final)
    writer.on_trial_complete(0, trials, done)
    writer.on_trial_error(0, trials, failed)
    writer.on_trial_result(0, trials, open_, _evaluation(4, 5.0))
    writer.on_experiment_end(trials)

    runs = mlflow_store.sweep_runs(client, "s", experiment="e")
    assert runs.parent.info.run_id == parent_id
    by_id = runs.by_trial_id()
    assert set(by_id) == {"t0", "t1", "t2"}
    run = client.get_run(by_id["t0"].info.run_id)
    tags = run.data.tags
    assert tags[schema.MLFLOW_PARENT_RUN_ID] == parent_id and run.info.run_name == "s_t0"
    assert (tags[schema.TAG_VARIANT], tags[schema.TAG_SEED]) == ("full", "0")
    assert (run.info.status, tags[schema.TAG_END_REASON]) == ("FINISHED", schema.END_COMPLETED)
    assert (tags[schema.TAG_DEVICE], tags[schema.TAG_NODE_ID], tags[schema.TAG_WORKER_STARTS]) == ("cpu", "node-a", "1")
    assert (tags[schema.TAG_BEST_CHECKPOINT], tags[schema.TAG_BEST_STEP]) == ("/ckpt/8", "8")
    assert run.data.params == {"seed": "0", "model.alpha": "2.0"}  # the worker's config, once
    assert _steps(client, run.info.run_id, "val/rouge_l") == [4, 8]
    assert _steps(client, run.info.run_id, "train_step/loss") == [3, 4, 7, 8]
    assert run.data.metrics["test/acc"] == 55.0 and run.data.metrics["best_val/rouge_l"] == 20.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"predictions", schema.ARTIFACT_FINAL_METRICS}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "predictions")] == [schema.ARTIFACT_PREDICTIONS_TEST]

    run = client.get_run(by_id["t1"].info.run_id)
    assert (run.info.status, run.data.tags[schema.TAG_END_REASON]) == ("FAILED", schema.END_FAILED)
    assert run.data.tags[schema.TAG_ERROR] == "lexicon missing"
    run = client.get_run(by_id["t2"].info.run_id)
    assert (run.info.status, run.data.tags[schema.TAG_END_REASON]) == ("KILLED", schema.END_INTERRUPTED)

    # --resume: Tune restores the writer from its pickle; the interrupted trial continues its
    # own run from its step-4 checkpoint, re-sending what it reported before it.
    resumed = pickle.loads(pickle.dumps(writer))
    assert resumed.tracking is tracking  # the driver's: one client, one write queue
    resumed.on_trial_start(0, [open_], open_)
    report = _evaluation(8, 7.0, session="w2", start=4, replay=[rp.stored_record(_evaluation(4, 5.0))])
    resumed.on_trial_result(0, [open_], open_, report)
    resumed.on_trial_complete(0, [open_], open_)
    run = client.get_run(by_id["t2"].info.run_id)
    assert len(mlflow_store.sweep_runs(client, "s", experiment="e").trials) == 3
    assert _steps(client, run.info.run_id, "val/rouge_l") == [4, 8]  # no duplicate
    assert _steps(client, run.info.run_id, "train_step/loss") == [3, 4, 7, 8]
    assert [m.value for m in client.get_metric_history(run.info.run_id, schema.WORKER_START_METRIC)] == [0.0, 4.0]
    tags = run.data.tags
    assert (tags[schema.TAG_TRIAL_STARTS], tags[schema.TAG_WORKER_STARTS], tags[schema.TAG_RESUMED_FROM_STEP]) == (
        "2", "2", "4")
    assert run.info.status == "KILLED" and tags[schema.TAG_END_REASON] == schema.END_PRUNED  # no final report

    tracking.close_parent_run(status="FINISHED", counts={"total": 3, "finished": 1, "failed": 1, "killed": 1},
                              rows=[{"trial_id": "t0", "test/acc": 55.0}, {"trial_id": "t1", "status": "FAILED"}],
                              best={"trial_id": "t0", "run_id": by_id["t0"].info.run_id,
                                    "metrics": {"val/rouge_l": 20.0}})
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[schema.TAG_TRIALS_FAILED] == "1"
    assert parent.data.metrics[schema.PARENT_BEST_METRIC_PREFIX + "val/rouge_l"] == 20.0
    assert json.loads(parent.data.tags[schema.TAG_GRID])["seeds"] == [0, 1]
    csv = Path(client.download_artifacts(parent_id, schema.ARTIFACT_SWEEP_RESULTS)).read_text().splitlines()
    assert csv == ["trial_id,test/acc,status", "t0,55.0,", "t1,,FAILED"]
    # every write went through the queue, and it is empty: no other file of unwritten writes
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == sorted([QUEUE_FILE, QUEUE_ARTIFACTS])
    assert (tmp_path / "sweep" / QUEUE_FILE).read_text() == ""


def test_a_resumed_sweep_continues_its_parent_run(tmp_path):
    from trainables.mlflow_store import open_tracking_store
    from trainables.sweep_tracking import SweepTracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    kwargs = dict(metric="val/bleu4", params={"sweep.num_trials": 8}, tags={}, spec={})
    first = SweepTracking(uri, "e", "s", "alpha_search", str(tmp_path)).open_parent_run(**kwargs)
    # a later driver (--resume)
    again = SweepTracking(uri, "e", "s", "alpha_search", str(tmp_path)).open_parent_run(
        **{**kwargs, "params": {"sweep.num_trials": 9}})
    assert again == first
    parent = open_tracking_store(uri).get_run(first[1])
    assert parent.data.tags[schema.TAG_RESUME_COUNT] == "1" and parent.data.params["sweep.num_trials"] == "8"


def test_variant_table_in_paper_order_with_every_reported_metric():
    import io

    from sweeps.result_tables import print_variant_table
    from sweeps.summary import SweepOutcome, TrialOutcome

    final = {"test/acc": 50.0, "test/bleu4": 10.0, "test/paintings": 140.0, "test/new_metric": 0.25}
    trials = [TrialOutcome(f"t{i}", "FINISHED", {Grid.VARIANT_KEY: v, Grid.SEED_KEY: s}, 1.0,
                           {**final, "test/acc": 50.0 + 2 * s})
              for i, (v, s) in enumerate([("full", 1), ("baseline", 0), ("full", 0), ("baseline", 1)])]
    trials.append(TrialOutcome("t9", "FAILED", {Grid.VARIANT_KEY: "no_vad_head", Grid.SEED_KEY: 0}, None))
    out = io.StringIO()
    print_variant_table(SweepOutcome("val/acc", trials, interrupted=False), out)
    text = out.getvalue()
    assert "on 140 test paintings" in text
    lines = [line.split() for line in text.splitlines()]
    per_seed = [line[:4] for line in lines if line and line[0] in VARIANTS and len(line) > 4 and line[2] in ("finished", "failed")]
    assert per_seed == [["baseline", "0", "finished", "50"], ["baseline", "1", "finished", "52"],
                        ["full", "0", "finished", "50"], ["full", "1", "finished", "52"],
                        ["no_vad_head", "0", "failed", "-"]]
    header = next(line for line in lines if line[:3] == ["variant", "seed", "status"])
    assert header[3:] == ["acc", "bleu4", "new_metric"]  # sevlm's order, then what else the runs reported
    assert ["baseline", "2", "51", "±", "1.4"] == next(line for line in lines if line[:2] == ["baseline", "2"])[:5]


def test_a_trial_starts_none_of_the_ray_train_actors_it_does_not_use(tmp_path, monkeypatch):
    import os

    from trainables.trial import TRAIN_ENV, build_trainer

    for key in TRAIN_ENV:  # absent again after the test
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    trainer = build_trainer({}, TrialSettings(sweep_name="s", storage_path=str(tmp_path)), "s_t0", in_tune=False)
    names = {type(cb).__name__ for cb in trainer._create_default_callbacks()}
    # no Ray Datasets manager, no placement-group cleaner (an actor each), no metrics callbacks
    assert not names & {"DatasetsCallback", "PlacementGroupCleanerCallback", "ControllerMetricsCallback",
                        "WorkerMetricsCallback"}, names
    assert "BackendSetupCallback" in names
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"  # propagated to the controller


def test_gpu_trials_share_each_gpu_nodes_cpus_and_can_pack_two_per_gpu():
    from sweeps.resources import decide_resources

    head = {"CPU": 0.0, "node:__internal_head__": 1.0}
    workers = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 6.0, "GPU": 1.0}]
    r = decide_resources([head, *workers], gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8)
    # the smaller node's share (6 CPUs for its one GPU) for every trial; one trial per GPU
    assert (r.use_gpu, r.concurrency, r.cpus_per_worker, r.gpus_per_worker) == (True, 2, 5.9, 1.0)
    r = decide_resources([head, *workers], gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8,
                         gpus_per_trial=0.5)
    assert (r.concurrency, r.cpus_per_worker, r.gpus_per_worker) == (4, 2.9, 0.5)
    assert r.describe() == "0.5 of a GPU and 3 CPU"
    assert "2 GPU(s) on 2 node(s)" in r.reason
    # CPUs are counted per node: two 3-CPU trials do not fit on a 5-CPU node beside its GPUs
    with pytest.raises(SweepError, match="more than the cluster can run"):
        decide_resources([{"CPU": 5.0, "GPU": 2.0}], gpu=None, cpus_per_trial=3.0, concurrency=2, total_trials=8)
    with pytest.raises(SweepError, match="gpus-per-trial"):
        decide_resources(workers, gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8, gpus_per_trial=2)
    cpu_only = decide_resources([head, {"CPU": 4.0}], gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8)
    assert (cpu_only.use_gpu, cpu_only.concurrency) == (False, 4) and "no GPU" in cpu_only.reason


def test_a_cluster_sweep_waits_for_the_expected_workers_and_says_so(tmp_path):
    import io

    from sweeps.cluster_wait import Expected, expected_workers, wait_for_cluster

    head = {"Alive": True, "Resources": {"CPU": 0.0, "node:__internal_head__": 1.0}}
    worker = {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}}
    joined = iter([[head]] * 12 + [[head, worker]])
    now = [0.0]
    out = io.StringIO()
    nodes = wait_for_cluster(Expected(1, "--wait-for-nodes 1"), need_gpu=False, timeout_s=60, out=out,
                             list_nodes=lambda: next(joined), clock=lambda: now[0],
                             sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert nodes == [head["Resources"], worker["Resources"]]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("waiting for the cluster (0 of 60 s): it has 0 worker node(s)")
    assert "1 more worker node(s) (--wait-for-nodes 1)" in lines[0]
    assert len(lines) == 3 and lines[-1].startswith("cluster ready after 12 s: 1 worker node(s) with 4 CPUs and 1 GPUs")
    # never decides on part of the cluster: a clear error at the time limit
    with pytest.raises(SweepError, match="not ready after 5 s.*1 more worker node"):
        wait_for_cluster(Expected(1, "x"), need_gpu=False, timeout_s=5, out=io.StringIO(),
                         list_nodes=lambda: [head], clock=lambda: now[0],
                         sleep=lambda s: now.__setitem__(0, now[0] + s))
    with pytest.raises(SweepError, match="a GPU"):
        wait_for_cluster(Expected(0, "x"), need_gpu=True, timeout_s=3, out=io.StringIO(),
                         list_nodes=lambda: [head], clock=lambda: now[0],
                         sleep=lambda s: now.__setitem__(0, now[0] + s))
    # the default: what ray up started the cluster with (the head's launcher config)
    config = tmp_path / "ray_bootstrap_config.yaml"
    assert expected_workers(None, str(config)).workers == 0
    config.write_text("min_workers: 1\nprovider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2, 10.0.0.3]}\n")
    assert expected_workers(None, str(config)).workers == 2
    assert expected_workers(3, str(config)) == Expected(3, "--wait-for-nodes 3")


def test_importance_of_trials_that_all_have_the_same_value_is_empty_not_an_error():
    # A short alpha search whose trials all score 0: fANOVA has no variance to apportion
    # ("Encountered zero total variance in all trees") and the sweep's report failed.
    import optuna

    from analysis.search import importances

    study = optuna.create_study(direction="maximize")
    distribution = {"model.alpha": optuna.distributions.FloatDistribution(0.1, 10, log=True)}
    for alpha in (0.5, 2.0, 8.0):
        study.add_trial(optuna.trial.create_trial(params={"model.alpha": alpha}, distributions=distribution, value=0.0))
    assert importances(study) == {}
    study.add_trial(optuna.trial.create_trial(params={"model.alpha": 1.0}, distributions=distribution, value=3.0))
    assert set(importances(study)) == {"model.alpha"}
