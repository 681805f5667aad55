"""The sweep framework end to end: real Ray (local and ray.cluster_utils.Cluster), real
MLflow (a SQLite file), the real training loop on a shrunken tiny configuration.

* flag and search-space validation (fast, no Ray);
* a 4-trial sweep at concurrency 2: every trial with its complete metric history in MLflow,
  nested under one parent run;
* a sweep interrupted (SIGINT) and continued with --resume: finished trials are not re-run;
* ASHA: stopped trials are KILLED in MLflow and free their worker's CPU for the next trial;
* a real `mlflow server` as the tracking URI (artifacts proxied), and the `mlflow ui`
  command a SQLite sweep prints actually serving that sweep's parent run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainables import tracking_schema as schema

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sweeps" / "alpha_search.py"

# A shrunken tiny configuration: a few seconds per evaluation on one CPU core. A trial
# evaluates (and checkpoints) every EVAL_EVERY optimizer steps, `evals` times.
EVAL_EVERY = 2
FAST_SETTINGS = {
    "data.synthetic_paintings": 40,
    "eval.max_eval_paintings": 6,
    "eval.use_meteor": False,
    "eval.max_new_tokens": 8,
    "train.batch_size": 4,
    "train.log_every_steps": 1,
    "train.eval_every_steps": EVAL_EVERY,
    "train.warmup_steps": 0,
}


def fast_flags(data_dir: Path, evals: int = 2, **extra) -> list[str]:
    values = {
        **FAST_SETTINGS,
        "train.max_steps": evals * EVAL_EVERY,
        "data.synthetic_dir": str(data_dir / "synthetic"),
        "data.feature_cache_dir": str(data_dir / "cache" / "features"),
        **extra,
    }
    flags = []
    for key, value in values.items():
        flags += ["--set", f"{key}={value}"]
    return flags


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One synthetic dataset and feature cache for every sweep of this module."""
    return tmp_path_factory.mktemp("sweep_data")


@pytest.fixture(autouse=True)
def _isolated(sweep_in_tmp):
    yield


def client_for(db: Path):
    # Through the sweep's own opener: a test polling a database that a sweep is creating
    # must not race MLflow's table creation (see test_concurrent_openers_of_a_new_store).
    from trainables.mlflow_store import open_tracking_store

    return open_tracking_store(f"sqlite:///{db}")


def sweep_runs(db: Path, sweep_name: str):
    from trainables import mlflow_store

    client = client_for(db)
    runs = mlflow_store.sweep_runs(client, sweep_name)
    return client, [runs.parent] if runs.parent else [], runs.trials


def steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))]


def assert_complete_history(client, run) -> list[int]:
    """Every evaluation once (no duplicate step), every metric family at each of them."""
    rid = run.info.run_id
    eval_steps = steps(client, rid, schema.EPOCH_METRIC)
    assert eval_steps, "no evaluation logged"
    assert eval_steps == sorted(set(eval_steps)), f"duplicate or unordered evaluations {eval_steps}"
    for key in ("train/loss", "train/loss_language", "train/loss_emotion", schema.THROUGHPUT_METRIC,
                schema.PEAK_MEMORY_METRIC, "val/bleu4", "val/acc", "val/cider"):
        assert steps(client, rid, key) == eval_steps, key
    train_steps = steps(client, rid, schema.TRAIN_STEP_PREFIX + "loss")
    assert train_steps == sorted(set(train_steps)) and train_steps, train_steps
    assert any(k.startswith(schema.TEST_PREFIX) for k in run.data.metrics), "no test metrics"
    for key in ("model.alpha", "train.lr_decoder", "train.lr_vad", "model.emotion_encoder_layers",
                "model.neg_wrong_emotion", "model.neg_other_image", "seed", "preset",
                schema.PARAM_DATA_FINGERPRINT, schema.PARAM_CODE_VERSION):
        assert key in run.data.params, key
    # what loading did to the data, and which EA classifier scored the run (issue 13)
    assert run.data.params.get(schema.PARAM_EA_CLASSIFIER)
    assert int(run.data.params[schema.PARAM_DATA_REPORT_PREFIX + "split.train.paintings"]) > 0
    artifacts = {a.path for a in client.list_artifacts(rid)}
    assert schema.ARTIFACT_DATA_REPORT in artifacts
    assert {schema.ARTIFACT_BEST_CHECKPOINT, schema.ARTIFACT_PREDICTIONS_DIR, schema.ARTIFACT_SAMPLES_DIR} <= artifacts
    samples = {Path(a.path).name for a in client.list_artifacts(rid, schema.ARTIFACT_SAMPLES_DIR)}
    assert "samples.json" in samples and len(samples) > 1, samples  # the explanations and their images
    # every final metric of the run (test metrics, best value, EA classifier accuracy) is logged
    assert schema.ARTIFACT_FINAL_METRICS in artifacts
    final = json.loads(Path(client.download_artifacts(rid, schema.ARTIFACT_FINAL_METRICS)).read_text())
    assert "ea_classifier/held_out_acc" in final and any(k.startswith(schema.TEST_PREFIX) for k in final)
    for key, value in final.items():
        assert run.data.metrics.get(key) == pytest.approx(value), key
    return eval_steps


# ------------------------------------------------------------------ fast: validation


def _main(argv):
    from sweeps.alpha_search import main

    return main(argv)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-trials", "0"], "--num-trials"),
        (["--concurrency", "0"], "--concurrency"),
        (["--metric", "val/bleu5"], "unknown metric"),
        (["--space", "model.alpha=log:5:1"], "empty range"),
        (["--space", "model.alpha=float:1:1"], "empty range"),
        (["--space", "model.emotion_encoder_layers=int:4:2"], "empty range"),
        (["--space", "model.alpha=log:0:1"], "LOW > 0"),
        (["--space", "model.alphaa=log:0.1:1"], "unknown parameter"),
        (["--space", "model.emotion_encoder_layers=int:0:9"], "0..6"),
        (["--space", "model.neg_other_image=log:0.1:1"], "switch"),
        (["--space", "model.alpha=log:3:10"], "paper's configuration is outside"),
        (["--space", "model.alpha=uniform:1:2"], "unknown kind"),
        (["--set", "train.nope=1"], "unknown configuration key"),
        (["--set", "model.alpha=2", "--space", "model.alpha=log:0.1:10"], "both searched"),
        (["--concurrency", str((os.cpu_count() or 1) + 1)], "more than the cluster can run"),
        (["--dataset", "artemis_v1"], "needs --artemis-csv"),
        (["--artemis-csv", "/nonexistent.csv"], "no such file"),
        (["--metric", "val/meteor", "--set", "eval.use_meteor=false"], "METEOR"),
        (["--gpu", "on"], "no GPU"),
        (["--tracking-uri", "mlruns"], "neither sqlite"),
        (["--tracking-uri", "http://127.0.0.1:9"], "cannot use the MLflow tracking store"),
        (["--asha-reduction-factor", "1"], "reduction"),
        (["--resume", "--name", "nothing-here"], "no sweep"),
    ],
)
def test_bad_flags_fail_before_any_trial(argv, message, capsys, tmp_path):
    import ray

    if argv == ["--gpu", "on"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    rc = _main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err, err
    assert not ray.is_initialized()
    assert not (tmp_path / "ray_results").exists() or not any((tmp_path / "ray_results").iterdir())
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_flag_is_a_usage_error(capsys):
    assert _main(["--no-such-flag"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_help_lists_the_flags(capsys):
    assert _main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--num-trials", "--concurrency", "--metric", "--asha", "--address", "--resume",
                 "--preset", "--dataset", "--artemis-csv", "--image-dir", "--tracking-uri"):
        assert flag in out


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    from trainables.mlflow_store import resolve_tracking_uri, ui_command

    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:///x/y.db", tmp_path) == f"sqlite:///{tmp_path / 'x' / 'y.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://head:5000"
    assert resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    cmd = ui_command(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert os.access(cmd.split()[0], os.X_OK), cmd  # the sweep's own Python (the venv is not on PATH)
    assert cmd.endswith(f" -m trainables.mlflow_ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}")


def test_concurrent_openers_of_a_new_store(tmp_path):
    # Two sweeps started at once on a new mlflow.db: MLflow creates the tables in each
    # process without a lock, and without ours all but one of them failed.
    db = tmp_path / "new.db"
    code = ("import sys; from trainables.sweep_tracking import SweepTracking; "
            f"SweepTracking('sqlite:///{db}', 'e', 's', 'alpha_search', '/nonexistent/s').probe(); print('opened')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0 and "opened" in out, out[-2000:]
    client = client_for(db)
    assert [e.name for e in client.search_experiments()] == ["Default"]


def test_both_negatives_off_means_no_contrastive_loss(tmp_path):
    from sevlm.config import compose, to_flat_dict
    from trainables.settings import TrialSettings

    base = to_flat_dict(compose("paper", {"train.monitor_metric": "val/bleu4"}))
    settings = TrialSettings(sweep_name="s", storage_path=str(tmp_path), base=base)
    cfg = compose(settings.base, {"model.neg_wrong_emotion": False, "model.neg_other_image": False},
                  settings.run_overrides("s_t1"))
    assert cfg.model.use_contrastive is False
    assert cfg.output_dir == f"{tmp_path}/s/outputs/s_t1"
    assert cfg.train.monitor_metric == "val/bleu4"
    cfg = compose(settings.base, {"model.neg_wrong_emotion": True, "model.neg_other_image": False})
    assert cfg.model.use_contrastive is True


# ------------------------------------------------------------- slow: real sweeps


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_logs_every_trial_under_one_parent(tmp_path, data_dir, capsys):
    name = "sweep4"
    rc = _main(["--num-trials", "4", "--concurrency", "2", "--name", name,
                "--progress-interval", "30"] + fast_flags(data_dir, evals=2))
    out = capsys.readouterr().out
    assert rc == 0, out
    db = tmp_path / "mlflow.db"
    client, parents, trials = sweep_runs(db, name)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(trials) == 4
    assert len({t.data.tags[schema.TAG_TRIAL_ID] for t in trials}) == 4
    for run in trials:
        assert run.data.tags[schema.MLFLOW_PARENT_RUN_ID] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.tags[schema.TAG_END_REASON] in (schema.END_COMPLETED, schema.END_EARLY_STOPPED)
        eval_steps = assert_complete_history(client, run)
        assert eval_steps == [EVAL_EVERY, 2 * EVAL_EVERY]
        assert run.info.run_name == schema.trial_run_name(name, run.data.tags[schema.TAG_TRIAL_ID])
    # the paper's configuration was the first trial
    first = min(trials, key=lambda r: int(r.data.tags[schema.TAG_TRIAL_INDEX]))
    assert first.data.tags[schema.TAG_IS_PAPER_CONFIG] == "true"
    assert float(first.data.params["model.alpha"]) == 2.0
    assert first.data.params["model.emotion_encoder_layers"] == "3"
    # concurrency 2: some two trials overlapped in time
    windows = sorted((r.info.start_time, r.info.end_time) for r in trials)
    assert any(b[0] < a[1] for a, b in zip(windows, windows[1:]))
    # the output: progress table, best configuration, MLflow UI command
    assert "val/rouge_l" in out and "Best configuration" in out
    assert f"-m trainables.mlflow_ui --backend-store-uri sqlite:///{db}" in out
    assert out.index("== sweep4") < out.index("Best configuration") < out.index("trainables.mlflow_ui")
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {schema.ARTIFACT_SWEEP_RESULTS, schema.ARTIFACT_SWEEP_BEST, schema.ARTIFACT_SWEEP_SPEC} <= parent_artifacts
    # the parent run's description in the UI: the results table, a row per trial
    note = parent.data.tags[schema.MLFLOW_NOTE]
    assert note.startswith(f"**Sweep `{name}`** (alpha_search, optimising `val/rouge_l`): FINISHED, 4 finished")
    assert all(f"| {t.data.tags[schema.TAG_TRIAL_ID]} | finished |" in note for t in trials)
    # it ends with its report (make sweep), logged to the parent run, the link after it
    assert (tmp_path / "reports" / name / "metrics_vs_params.png").is_file()
    assert "Alpha search report: " in out, out[-2000:]
    assert out.index("Best configuration") < out.index("Alpha search report: ") < out.index("then open http://")
    # (importance and parallel coordinates need trials with different values: not these)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {
        "report/report.html", "report/metrics_vs_params.png"}
    assert f"/runs/{parent.info.run_id}?workflowType=machine_learning" in out


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_asha_stopped_trials_are_killed_and_free_their_resources(tmp_path, data_dir, capsys):
    # 4 trials at concurrency 2 on 2 CPUs: a trial stopped by ASHA must give its worker's
    # CPU back (its Ray Train placement group), or the next trial would wait forever.
    name = "asha"
    rc = _main(["--num-trials", "4", "--concurrency", "2", "--asha", "--asha-reduction-factor", "3",
                "--name", name, "--progress-interval", "60", "--no-report"] + fast_flags(data_dir, evals=4))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Alpha search report" not in out  # --no-report
    assert not (tmp_path / "reports").exists()
    client, parents, trials = sweep_runs(tmp_path / "mlflow.db", name)
    assert len(parents) == 1 and len(trials) == 4
    assert parents[0].info.status == "FINISHED"
    finished = [t for t in trials if t.info.status == "FINISHED"]
    assert finished, "ASHA never lets the first trial at a rung stop"
    for run in trials:
        eval_steps = steps(client, run.info.run_id, schema.EPOCH_METRIC)
        assert eval_steps == sorted(set(eval_steps)) and eval_steps
        if run.info.status == "FINISHED":
            assert eval_steps == [EVAL_EVERY * (i + 1) for i in range(4)]
            assert any(k.startswith(schema.TEST_PREFIX) for k in run.data.metrics)
        else:  # stopped early by ASHA: what it ran, no test evaluation
            assert run.info.status == "KILLED"
            assert f"{run.data.tags[schema.TAG_TRIAL_ID]}  stopped early" in out
            assert run.data.tags[schema.TAG_END_REASON] == schema.END_PRUNED
            assert len(eval_steps) < 4
            assert not any(k.startswith(schema.TEST_PREFIX) for k in run.data.metrics)


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path, data_dir):
    name = "resumable"
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # --verbose: the workers' logs too, to check that Ray Train/Tune emit no deprecation warning
    argv = [sys.executable, str(SCRIPT), "--num-trials", "2", "--concurrency", "1", "--name", name,
            "--progress-interval", "30", "--verbose"] + fast_flags(data_dir, evals=3)
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def second_trial_checkpointed():
            if proc.poll() is not None:
                raise AssertionError(f"sweep ended early: {(tmp_path / 'first.log').read_text()[-3000:]}")
            if not db.exists():
                return None
            try:
                _, _, trials = sweep_runs(db, name)
            except Exception:  # noqa: BLE001
                return None
            finished = [t for t in trials if t.info.status == "FINISHED"]
            running = [t for t in trials if t.info.status == "RUNNING" and "epoch" in t.data.metrics]
            return (finished, running) if finished and running else None

        finished, running = _wait_for(second_trial_checkpointed, 450, "one finished and one checkpointed trial")
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    first_log = (tmp_path / "first.log").read_text()
    assert rc == 130, first_log[-3000:]
    assert "--resume" in first_log
    assert "RayTrainWorker" in first_log  # the workers' logs are in it
    assert "deprecat" not in first_log.lower(), [l for l in first_log.splitlines() if "eprecat" in l][:5]

    client, parents, trials = sweep_runs(db, name)
    assert parents[0].info.status == "KILLED"
    before = {t.data.tags[schema.TAG_TRIAL_ID]: t for t in trials}
    done_before = {t.data.tags[schema.TAG_TRIAL_ID] for t in finished}
    interrupted = {t.data.tags[schema.TAG_TRIAL_ID] for t in running}
    assert all(before[i].info.status == "FINISHED" for i in done_before)
    assert all(before[i].info.status == "KILLED" for i in interrupted)

    from sweeps.alpha_search import main

    assert main(["--resume", "--progress-interval", "30"]) == 0  # the latest sweep in ./ray_results

    client, parents, trials = sweep_runs(db, name)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[schema.TAG_RESUME_COUNT] == "1"
    assert len(trials) == 2
    after = {t.data.tags[schema.TAG_TRIAL_ID]: t for t in trials}
    for trial_id in done_before:  # not re-run: untouched since the interruption
        run = after[trial_id]
        assert run.data.tags[schema.TAG_TRIAL_STARTS] == "1"
        assert run.info.end_time == before[trial_id].info.end_time
        assert run.data.tags[schema.TAG_WORKER_STARTS] == "1"
    for trial_id in interrupted:  # continued in its own run, from its checkpoint
        run = after[trial_id]
        assert run.info.status == "FINISHED"
        assert run.data.tags[schema.TAG_TRIAL_STARTS] == "2"
        assert int(run.data.tags[schema.TAG_RESUMED_FROM_STEP]) > 0
    for run in trials:
        assert run.info.status == "FINISHED"
        assert assert_complete_history(client, run) == [EVAL_EVERY * (i + 1) for i in range(3)]


# ------------------------------------------------------------ real MLflow servers


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def mlflow_server(shell_command: str, port: int, log_path: Path):
    """Start an MLflow server/UI command in its own process group; stop it afterwards."""
    log = log_path.open("w")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(["bash", "-c", shell_command], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy():
            if proc.poll() is not None:
                raise AssertionError(f"MLflow server exited: {log_path.read_text()[-3000:]}")
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return None

        _wait_for(healthy, 120, f"MLflow server on port {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sweep_logs_to_a_tracking_server_and_the_printed_ui_command_serves_a_sqlite_sweep(
    tmp_path, data_dir, capsys
):
    # 1. A real `mlflow server` (as cluster.yaml starts on the head), proxying artifacts.
    port = _free_port()
    server_cmd = (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {Path(sys.executable).parent / 'mlflow'} server "
                  f"--workers 1 --host 127.0.0.1 --port {port} "
                  f"--backend-store-uri sqlite:///{tmp_path / 'server.db'} "
                  f"--artifacts-destination {tmp_path / 'server_artifacts'}")
    name = "served"
    with mlflow_server(server_cmd, port, tmp_path / "server.log") as url:
        rc = _main(["--num-trials", "2", "--concurrency", "2", "--name", name, "--tracking-uri", url,
                    "--progress-interval", "60"] + fast_flags(data_dir))
        out = capsys.readouterr().out
        assert rc == 0, out
        assert f"open {url} in a browser" in out
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=url)
        exp = client.get_experiment_by_name(schema.DEFAULT_EXPERIMENT)
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.TAG_SWEEP_NAME}` = '{name}'")
        parents = [r for r in runs if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_PARENT]
        trials = [r for r in runs if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_TRIAL]
        assert len(parents) == 1 and len(trials) == 2
        for run in trials:
            assert run.info.status == "FINISHED"
            assert run.data.tags[schema.MLFLOW_PARENT_RUN_ID] == parents[0].info.run_id
            # artifacts went through the server's proxy, not into a local folder
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")
            assert assert_complete_history(client, run) == [EVAL_EVERY, 2 * EVAL_EVERY]
    assert not (tmp_path / "mlflow.db").exists()
    assert any((tmp_path / "server_artifacts").rglob(schema.ARTIFACT_FINAL_METRICS))

    # 2. The command a SQLite sweep prints opens the UI on its runs.
    name = "browsable"
    assert _main(["--num-trials", "1", "--name", name, "--progress-interval", "60"] + fast_flags(data_dir)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    ui_cmd = next(line.strip() for line in lines if " -m trainables.mlflow_ui --backend-store-uri " in line)
    link = next(line.split("open ", 1)[1].strip() for line in lines if "then open http://127.0.0.1:5000/" in line)
    assert link.endswith("?workflowType=machine_learning")  # MLflow 3's "Model training" view, not GenAI
    parent_run_id = link.rsplit("/runs/", 1)[1].split("?")[0]
    port = _free_port()
    with mlflow_server(f"{ui_cmd} --host 127.0.0.1 --port {port}", port, tmp_path / "ui.log") as url:
        run = _get_json(f"{url}/api/2.0/mlflow/runs/get?run_id={parent_run_id}")["run"]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags[schema.TAG_SWEEP_NAME] == name and tags[schema.TAG_ROLE] == schema.ROLE_PARENT
        assert link.startswith("http://127.0.0.1:5000/#/experiments/" + run["info"]["experiment_id"] + "/runs/")
        # what the UI shows on that page: the run's description is the results table
        assert tags[schema.MLFLOW_NOTE].startswith(f"**Sweep `{name}`**") and "| trial | status |" in tags[schema.MLFLOW_NOTE]
        experiment = _get_json(f"{url}/api/2.0/mlflow/experiments/get?experiment_id={run['info']['experiment_id']}")
        experiment_tags = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}
        assert "One child run per trial" in experiment_tags[schema.MLFLOW_NOTE]
