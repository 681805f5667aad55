"""The ablation sweep: real Ray and MLflow for ``--quick``, and the pairing of its seeds
checked on the models and data loaders its trial configurations build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sevlm.variants import VARIANTS
from sweeps.strategies import Grid
from trainables import tracking_schema as schema

SCRIPT = Path(__file__).resolve().parents[1] / "sweeps" / "ablations.py"

@pytest.fixture(autouse=True)
def _isolated(sweep_in_tmp):
    yield


def test_unknown_variant_is_a_usage_error_that_lists_the_known_ones(capsys):
    from sweeps.ablations import main

    assert main(["--variants", "full,no_such_thing"]) == 2
    err = capsys.readouterr().err
    assert "no_such_thing" in err and ", ".join(VARIANTS) in err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--seeds", "--variants", "--quick", "--preset", "--dataset", "--address", "--storage",
                 "--tracking-uri", "--resume", "--trial-retries", "--worker-retries", "--verbose"):
        assert flag in out, flag


def _trial_configs(data_root: Path, tmp_path: Path, points: list[tuple[str, int]]):
    """What the ablation sweep's trials build, on a small synthetic set."""
    from sevlm.config import compose
    from sweeps.ablation_benchmark import DEFAULT_OVERRIDES

    overrides = {
        **DEFAULT_OVERRIDES["tiny"],
        "data.synthetic_dir": str(data_root / "synthetic-small"),
        "data.feature_cache_dir": str(data_root / "cache" / "features"),
        "data.synthetic_paintings": 60,
        "data.split_fractions": [0.7, 0.1, 0.2],
    }
    grid = Grid(variants=dict(VARIANTS), seeds=[1, 2])
    base = compose("tiny", {"train.monitor_metric": "val/bleu4"}, overrides)
    return [compose(base, grid.variants[v], {"seed": s, "output_dir": f"{tmp_path}/pairs/outputs/{v}_{s}"})
            for v, s in points]


def _batches(ctx, n: int = 3):
    from sevlm.data import make_train_loader

    loader = make_train_loader(ctx.data, batch_size=ctx.cfg.train.batch_size, seed=ctx.cfg.seed)
    out = []
    for batch, _ in zip(loader, range(n)):
        out.append((batch["painting_id"], batch["input_ids"], batch["neg_wrong_emotion"]["input_ids"],
                    batch["neg_other_image"]["input_ids"]))
    return out


def _same_batches(a, b) -> bool:
    return all(x[0] == y[0] and all(torch.equal(p, q) for p, q in zip(x[1:], y[1:])) for x, y in zip(a, b))


@pytest.mark.slow
def test_variants_at_one_seed_share_initial_weights_and_batch_order(data_root, tmp_path):
    from sevlm.training.loop import build_context

    points = [("full", 1), ("baseline", 1), ("no_emotion_encoder", 1), ("alpha_8", 1), ("full", 2)]
    contexts = {p: build_context(cfg) for p, cfg in zip(points, _trial_configs(data_root, tmp_path, points))}
    full = contexts[("full", 1)]
    weights = full.model.state_dict()
    for point in points[1:4]:
        other = contexts[point].model.state_dict()
        shared = set(weights) & set(other)
        assert {k for k in weights if k.startswith("decoder.")} <= shared, point  # the decoder at least
        # the emotion encoder itself differs in depth; everything else the two share is equal
        different = [k for k in shared if not torch.equal(weights[k], other[k])]
        assert different == [], (point, different[:5])
        assert _same_batches(_batches(full), _batches(contexts[point])), point
    # the same data and test paintings for every seed; other weights and batches for another seed
    other_seed = contexts[("full", 2)]
    assert other_seed.data.fingerprint == full.data.fingerprint
    assert list(other_seed.data.splits["test"].references) == list(full.data.splits["test"].references)
    assert any(not torch.equal(v, other_seed.model.state_dict()[k]) for k, v in weights.items())
    assert not _same_batches(_batches(full), _batches(other_seed))


def _interrupted_after_one_finished_trial(tmp_path: Path, argv: list[str], name: str):
    """Run the ablation sweep in a subprocess and stop it (SIGTERM, as Ctrl-C) once one
    trial has finished; returns that trial's run."""
    from test_sweep import _wait_for

    from trainables import mlflow_store

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log_path = tmp_path / "interrupted.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *argv], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    db = tmp_path / "mlflow.db"

    def one_finished():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended by itself: {log_path.read_text()[-3000:]}")
        if not db.exists():
            return None
        try:
            trials = mlflow_store.sweep_runs(mlflow_store.open_tracking_store(f"sqlite:///{db}"), name).trials
        except Exception:  # noqa: BLE001 - the store is being created
            return None
        return next((t for t in trials if t.info.status == "FINISHED"), None)

    try:
        finished = _wait_for(one_finished, 400, "one finished trial")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130, log_path.read_text()[-3000:]
        # Ray's own warnings stay behind --verbose (this one: a grid holds its concurrency itself)
        log_text = log_path.read_text()
        assert "max_concurrent_trials" not in log_text
        # what happened, in the project's words: the last table, the counts, one way to resume
        table = log_text[log_text.rindex("== " + name):]
        assert "sweep interrupted" in table.splitlines()[0]
        assert "TERMINATED" not in table and "terminated" not in table
        assert "finished" in table and ("not started" in table or "interrupted" in table)
        assert "Tuner.restore" not in log_text and "Failed to fetch metrics" not in log_text
        assert "FileNotFoundError" not in log_text
        assert log_text.count("--resume") == 1 and f"--resume --name {name}" in log_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return finished


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_ablation_sweep_interrupted_and_resumed_one_child_run_per_variant_and_seed(tmp_path, capsys):
    from sweeps.ablations import QUICK_VARIANTS, main
    from trainables import mlflow_store

    from sevlm.data.synthetic_emoset import generate_synthetic_emoset

    # --heldout through a real sweep: every trial's tested checkpoint is also scored on EmoSet.
    emoset = generate_synthetic_emoset(tmp_path / "emoset", images_per_emotion=2)
    argv = ["--quick", "--name", "quick", "--progress-interval", "600", "--heldout", f"emoset:{emoset}"]
    finished = _interrupted_after_one_finished_trial(tmp_path, argv, "quick")
    # --resume finishes the explicit (variant, seed) points without running a finished one again
    rc = main(["--resume", "--name", "quick", "--progress-interval", "600"])
    out = capsys.readouterr().out
    assert rc == 0, out
    client = mlflow_store.open_tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow_store.sweep_runs(client, "quick")
    done = {r.info.run_id: r for r in runs.trials}[finished.info.run_id]
    assert done.data.tags[schema.TAG_TRIAL_STARTS] == "1" and done.info.end_time == finished.info.end_time
    assert runs.parent.data.tags[schema.TAG_RESUME_COUNT] == "1"
    assert runs.parent is not None and runs.parent.info.status == "FINISHED"
    assert runs.parent.data.tags[schema.TAG_SWEEP_KIND] == "ablations"
    pairs = sorted((r.data.tags[schema.TAG_VARIANT], int(r.data.tags[schema.TAG_SEED])) for r in runs.trials)
    assert pairs == sorted((v, s) for v in QUICK_VARIANTS for s in (0, 1))
    for run in runs.trials:
        assert run.data.tags[schema.MLFLOW_PARENT_RUN_ID] == runs.parent.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.params["seed"] == run.data.tags[schema.TAG_SEED]
        variant = VARIANTS[run.data.tags[schema.TAG_VARIANT]]
        assert run.data.params["model.use_contrastive"] == str(variant["model.use_contrastive"])
        assert any(k.startswith(schema.TEST_PREFIX) for k in run.data.metrics)
        assert 0 <= run.data.metrics[schema.heldout_metric("emoset", "closed_acc")] <= 100
        predictions = Path(client.download_artifacts(run.info.run_id, schema.ARTIFACT_PREDICTIONS_TEST))
        header, *rows = predictions.read_text().splitlines()
        assert "painting_id" in header and "predicted_emotion" in header and rows
        best = json.loads(Path(client.download_artifacts(run.info.run_id, schema.ARTIFACT_BEST_CHECKPOINT)).read_text())
        assert best.get("path")  # tested with its best-validation checkpoint
    # the console: the progress table, the variant x seed table, the report, where the parent run is
    assert "== quick" in out and "Mean ± sd over seeds" in out
    assert out.index("Test metrics") < out.index("Ablation report: ") < out.index("then open http://127.0.0.1:5000/")
    assert (tmp_path / "reports" / "quick" / "report.md").is_file()
    assert runs.parent.info.run_id in out
    assert "worker processes have been started" not in out and "TensorBoard" not in out
