"""One training run end to end: exact resume, safe checkpoints, the CLI, and learning."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import pytest

from sevlm.training.callbacks import TrainingCallback
from sevlm.training.checkpoint import TRAINING_STATE_FILE, is_checkpoint
from sevlm.training.loop import run_training
from tests.conftest import small_config


class _Recorder(TrainingCallback):
    def __init__(self, crash_after_evals: int | None = None) -> None:
        self.starts: list[int] = []
        self.logs: list[tuple[int, dict]] = []
        self.evals = []
        self.end = None
        self.crash_after_evals = crash_after_evals

    def on_train_start(self, config_flat, start_step):
        self.config_flat = config_flat
        self.starts.append(start_step)

    def on_train_log(self, step, metrics):
        self.logs.append((step, metrics))

    def on_evaluation(self, event):
        self.evals.append(event)
        if self.crash_after_evals is not None and len(self.evals) >= self.crash_after_evals:
            raise KeyboardInterrupt("simulated crash")

    def on_train_end(self, result):
        self.end = result


def _strip_timing(metrics: dict) -> dict:
    timing = ("samples_per_s", "memory", "seconds_per_painting")
    return {k: v for k, v in metrics.items() if not any(t in k for t in timing)}


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_identically(tmp_path, data_root):
    overrides = {"train.eval_every_steps": 5, "train.epochs": 2}
    full = _Recorder()
    expected = run_training(small_config(data_root, tmp_path / "full", **overrides), [full])

    crashed = _Recorder(crash_after_evals=2)
    cfg = small_config(data_root, tmp_path / "resumed", **overrides)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, [crashed])
    checkpoint = crashed.evals[-1].checkpoint_dir
    assert is_checkpoint(checkpoint)
    resumed = _Recorder()
    result = run_training(cfg, [resumed], resume_from=checkpoint)

    assert resumed.starts == [crashed.evals[-1].step] and resumed.starts[0] > 0
    assert _strip_timing(result.final_metrics) == _strip_timing(expected.final_metrics)
    tail = [(_strip_timing(e.metrics), e.step) for e in resumed.evals]
    assert tail == [(_strip_timing(e.metrics), e.step) for e in full.evals[len(crashed.evals):]]
    assert len(full.evals) >= 4
    # the loss terms are reported separately, with throughput and memory
    metrics = full.evals[0].metrics
    for key in ("train/loss_language", "train/loss_emotion", "train/loss_contrastive",
                "train/samples_per_s", "train/peak_memory_mb", "val/acc", "val/bleu4"):
        assert key in metrics
    assert full.config_flat["data.fingerprint"] and full.config_flat["code_version"]
    predictions = result.artifacts["predictions_test"]
    header = predictions.read_text().splitlines()[0].split(",")
    assert header[:5] == ["painting_id", "dominant_emotion", "predicted_emotion", "closed_set_emotion", "explanation"]
    samples = json.loads(result.artifacts["samples"].read_text())
    assert samples and (result.artifacts["samples"].parent / samples[0]["image"]).is_file()


class _Evil:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_checkpoints_refuse_arbitrary_pickles(tmp_path, data_root):
    from sevlm.training.checkpoint import load_checkpoint
    from sevlm.training.loop import build_context

    cfg = small_config(data_root, tmp_path / "run", **{"train.epochs": 1})
    ctx = build_context(cfg)
    from sevlm.training.checkpoint import TrainingState, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "ckpt", ctx.model, ctx.optimizer, ctx.scheduler,
                           ctx.scaler, TrainingState(step=3), "{}")
    state = load_checkpoint(ckpt, ctx.model, ctx.optimizer, ctx.scheduler, ctx.scaler)
    assert state.step == 3
    with open(ckpt / TRAINING_STATE_FILE, "wb") as handle:
        pickle.dump({"optimizer": _Evil()}, handle)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(ckpt, ctx.model, ctx.optimizer, ctx.scheduler, ctx.scaler)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "missing", ctx.model, ctx.optimizer, ctx.scheduler, ctx.scaler)


def test_cli_help_documents_every_path():
    from sevlm.train import build_parser

    text = build_parser().format_help()
    for flag in ("--preset", "--dataset", "--artemis-csv", "--contrastive-csv", "--image-dir",
                 "--image-pretrained", "--decoder", "--vad-lexicon", "--vad-path", "--resume",
                 "--set"):
        assert flag in text


@pytest.mark.slow
def test_cli_runs_one_configuration(tmp_path, data_root, capsys):
    from sevlm.train import main

    args = ["--preset", "tiny", "--quiet", "--epochs", "1",
            "--synthetic-dir", str(data_root / "synthetic-small"),
            "--feature-cache-dir", str(data_root / "cache" / "features"),
            "--output-dir", str(tmp_path / "cli"),
            "--set", "data.synthetic_paintings=60", "--set", "eval.use_meteor=false"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test/acc" in out and "test/bleu4" in out and "best checkpoint" in out
    from sevlm.names import EVAL_METRIC_NAMES
    from sevlm.training.evaluation import PREDICTION_COLUMNS

    final = json.loads((tmp_path / "cli" / "final_metrics.json").read_text())
    assert {f"test/{m}" for m in EVAL_METRIC_NAMES} - {"test/meteor"} <= set(final)
    import pandas as pd

    predictions = pd.read_csv(tmp_path / "cli" / "predictions" / "test.csv")
    assert list(predictions.columns) == PREDICTION_COLUMNS
    assert predictions["closed_set_emotion"].notna().all()
    words = predictions["words"].sum()
    assert final["test/nonword_rate"] == pytest.approx(100 * predictions["nonwords"].sum() / words)
    # The stored per-painting statistics give back the run's corpus scores.
    from sevlm.metrics.corpus_stats import corpus_scores

    recomputed = corpus_scores(predictions.set_index("painting_id"))
    for name in ("bleu1", "bleu4", "rouge_l", "cider"):
        assert 100 * recomputed[name] == pytest.approx(final[f"test/{name}"], abs=1e-9), name


@pytest.mark.slow
def test_tiny_full_model_beats_the_majority_class(tmp_path, data_root):
    """The default tiny preset on the default synthetic data learns the emotions."""
    from sevlm.config import apply_overrides, tiny

    cfg = apply_overrides(tiny(), {
        "data.synthetic_dir": str(data_root / "synthetic-default"),
        "data.feature_cache_dir": str(data_root / "cache" / "features"),
        "output_dir": str(tmp_path / "learn"),
        "eval.decoding": "greedy",
    })
    result = run_training(cfg)
    from sevlm.data import prepare_data  # noqa: F401  (dataset already cached)

    test = result.artifacts["predictions_test"]
    import pandas as pd

    frame = pd.read_csv(test).dropna(subset=["dominant_emotion"])
    majority = Counter(frame["dominant_emotion"]).most_common(1)[0][1] / len(frame)
    acc = result.final_metrics["test/acc"] / 100.0
    assert acc >= majority + 0.2, (acc, majority)
    # the shared EA classifier reads the synthetic utterances clearly above chance (1/9)
    assert result.final_metrics["ea_classifier/held_out_acc"] > 40.0


def test_early_stopping_stops_when_the_metric_stalls(tmp_path, data_root):
    # val/paintings never changes, so it never improves after the first evaluation
    cfg = small_config(data_root, tmp_path / "es", **{
        "train.epochs": 5, "train.monitor_metric": "val/paintings",
        "train.early_stopping_patience": 1})
    recorder = _Recorder()
    result = run_training(cfg, [recorder])
    assert result.stopped_early
    assert [e.is_best for e in recorder.evals] == [True, False]
    assert result.final_metrics["best_step"] == recorder.evals[0].step


def test_loss_term_diagnostic_reports_every_enabled_term(tmp_path, data_root, capsys):
    from sevlm.training.loss_diagnostics import TERMS, all_finite, main, run

    cfg = small_config(data_root, tmp_path / "diag")
    snapshots = run(cfg, steps=4, every=2)
    assert [s.step for s in snapshots] == [0, 2, 3]
    for snap in snapshots:
        assert set(snap.terms) == set(TERMS)  # the full model: every term is on
        assert snap.terms["language"].cosine_to_language == pytest.approx(1.0, abs=1e-4)
        assert all(t.grad_norm > 0 for t in snap.terms.values())
        assert 0 < snap.clip_factor <= 1 and snap.total_grad_norm > 0
        parts = {"decoder", "vad_fusion", "emotion_encoder", "vad_head", "contrastive_head"}
        assert set(snap.per_module_grad_norm) == set(snap.per_module_drift) == parts
    assert all(v == 0 for v in snapshots[0].per_module_drift.values())
    assert all(v > 0 for v in snapshots[-1].per_module_drift.values())
    assert all_finite(snapshots)
    # The contrastive term is alpha x the loss: alpha = 0 leaves a zero gradient.
    zero = run(small_config(data_root, tmp_path / "diag0", **{"model.alpha": 0.0}), steps=1, every=1)
    assert zero[0].terms["contrastive"].grad_norm == 0.0
    # The baseline has the language term only; the CLI writes every snapshot as JSON.
    out = tmp_path / "diag.json"
    args = ["--quiet", "--synthetic-dir", str(data_root / "synthetic-small"),
            "--feature-cache-dir", str(data_root / "cache" / "features"),
            "--output-dir", str(tmp_path / "diag-cli"), "--steps", "2", "--every", "1",
            "--set", "data.synthetic_paintings=60", "--set", "model.use_vad_features=false",
            "--set", "model.use_vad_head=false", "--set", "model.use_contrastive=false",
            "--json", str(out)]
    assert main(args) == 0
    assert "|g lang|" in capsys.readouterr().out
    assert [set(s["terms"]) for s in json.loads(out.read_text())] == [{"language"}, {"language"}]


def test_adamw_foreach_updates_match_the_per_parameter_loop(tmp_path, data_root):
    """The run's AdamW uses the foreach implementation (faster on CPU); it must update every
    parameter exactly as the per-parameter loop would, under the warm-up schedule."""
    import copy

    import torch

    from sevlm.training.loop import _linear_schedule, build_context

    cfg = small_config(data_root, tmp_path / "run")
    ctx = build_context(cfg)
    assert ctx.optimizer.defaults["foreach"] is True
    models = {fe: copy.deepcopy(ctx.model) for fe in (False, True)}
    optimizers = {fe: torch.optim.AdamW(m.parameter_groups(1e-2, 2e-2, 0.01), foreach=fe) for fe, m in models.items()}
    schedules = {fe: torch.optim.lr_scheduler.LambdaLR(o, _linear_schedule(3, 10)) for fe, o in optimizers.items()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        grads = [torch.randn(p.shape, generator=generator) for p in models[False].parameters()]
        for fe, model in models.items():
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            optimizers[fe].step()
            schedules[fe].step()
    for a, b in zip(models[False].parameters(), models[True].parameters()):
        assert torch.equal(a, b)


# A short run in a fresh process (malloc's settings are per process): argv config JSON, mode.
_RUN_WITH_MALLOC = r"""
import json, sys
from sevlm.config import from_json
from sevlm.training import loop
from sevlm.training.allocator import keep_freed_memory
if sys.argv[2] == "default":
    loop.keep_freed_memory = lambda: False
result = loop.run_training(from_json(open(sys.argv[1]).read()))
print(json.dumps({"applied": keep_freed_memory() if sys.argv[2] == "keep" else None,
                  "metrics": result.final_metrics}))
"""


@pytest.mark.slow
def test_keeping_freed_memory_in_malloc_changes_no_result(tmp_path, data_root):
    import platform
    import subprocess
    import sys

    from sevlm.config import to_json

    outputs = {}
    for mode in ("default", "keep"):
        cfg = small_config(data_root, tmp_path / mode, **{"train.epochs": 1})
        path = tmp_path / f"{mode}.json"
        path.write_text(to_json(cfg))
        done = subprocess.run([sys.executable, "-c", _RUN_WITH_MALLOC, str(path), mode], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert outputs["keep"]["applied"] is True
    assert _strip_timing(outputs["keep"]["metrics"]) == _strip_timing(outputs["default"]["metrics"])
    predictions = [(tmp_path / mode / "predictions" / "test.csv").read_text() for mode in ("default", "keep")]
    assert predictions[0] == predictions[1]
