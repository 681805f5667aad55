"""What a sweep prints and records at its end, from a (fake) ResultGrid: the outcome, the
console filter, the last table, the variant table, parameter importance."""

from __future__ import annotations

from sevlm.variants import VARIANTS
from sweeps.strategies import Grid


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
