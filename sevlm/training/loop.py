"""One training run: data, model, AdamW with two learning rates, evaluation, checkpoints.

``run_training`` is what one Ray trial runs. Progress leaves only through
:class:`~sevlm.training.callbacks.TrainingCallback`, so this module knows nothing about Ray
or MLflow. Resuming from a checkpoint continues exactly: on CPU an interrupted and an
uninterrupted run end with identical metrics (data order and negatives are a function of
(seed, epoch), the RNG states are restored, evaluation sampling is seeded by the step).
"""

from __future__ import annotations

import json
import logging
import random
import resource
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import sevlm  # noqa: F401
from sevlm.config import ExperimentConfig, to_flat_dict, to_json
from sevlm.data import PreparedData, eval_batches, make_train_loader, prepare_data
from sevlm.data.report import REPORT_FILE
from sevlm.metrics.emotion_classifier import classifier_identity, load_or_train_classifier
from sevlm.metrics.vocabulary import vocabulary
from sevlm.model import SEVLM, build_image_encoder
from sevlm.model.weights import ensure_pretrained_available
from sevlm.names import EA_CLASSIFIER_PARAM, INFERENCE_SECONDS, TRAINABLE_PARAMETERS
from sevlm.provenance import code_version
from sevlm.text import SEVLMTokenizer
from sevlm.training.allocator import keep_freed_memory
from sevlm.training.callbacks import EvaluationEvent, RunResult, TrainingCallback
from sevlm.training.checkpoint import (
    MODEL_FILE,
    TrainingState,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from sevlm.training.evaluation import generate_explanations, score_generations, write_predictions
from sevlm.vad import load_lexicon

log = logging.getLogger(__name__)

BEST_MODEL_FILE = "best_model.safetensors"
# The random (tiny) image encoder uses a fixed seed so that every trial of a sweep shares
# one feature cache; trial seeds vary the trainable model only.
IMAGE_ENCODER_SEED = 0


def ea_classifier_dir(cfg: ExperimentConfig) -> Path:
    """Where the EA classifier is stored: ``data.ea_classifier_dir``, or next to the
    feature cache (``<feature_cache_dir>/../ea_classifier``)."""
    if cfg.data.ea_classifier_dir:
        return Path(cfg.data.ea_classifier_dir)
    return Path(cfg.data.feature_cache_dir).parent / "ea_classifier"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but CUDA is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _linear_schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


@dataclass
class RunContext:
    """Everything a run builds before its first step."""

    cfg: ExperimentConfig
    device: torch.device
    tokenizer: SEVLMTokenizer
    data: PreparedData
    classifier: object
    model: SEVLM
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    steps_per_epoch: int
    total_steps: int
    output_dir: Path
    vocabulary: frozenset[str]  # the training utterances' words (non-word rate)


def build_context(cfg: ExperimentConfig) -> RunContext:
    from sevlm.pretrain import resolve_decoder_init

    # model.decoder_init=pretrained: the text-pretrained decoder's folder (built once, then
    # shared); the run's config, params and checkpoints name the folder it read.
    cfg = resolve_decoder_init(cfg)
    ensure_pretrained_available(cfg.model)  # before any data work: fail fast, once
    keep_freed_memory()
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.seed)
    tokenizer = SEVLMTokenizer.for_decoder(
        cfg.model.decoder.name_or_path, cfg.model.decoder.bpe_merges
    )
    lexicon = load_lexicon(cfg.vad.lexicon, cfg.vad.path, cfg.vad.lemmatize)
    encoder = build_image_encoder(cfg.model.image_encoder, seed=IMAGE_ENCODER_SEED)
    data = prepare_data(cfg, tokenizer, lexicon, encoder)
    del encoder  # features are cached; the encoder is not needed for training
    train = data.splits["train"].annotations
    texts, labels = train["utterance"].tolist(), train["emotion"].tolist()
    classifier = load_or_train_classifier(
        ea_classifier_dir(cfg),
        classifier_identity(texts, labels),
        texts,
        labels,
        seed=0,  # one classifier per training set, whatever the trial's seed
    )
    seed_everything(cfg.seed)
    model = SEVLM.from_config(
        cfg.model, tokenizer, data.features.feature_dim, seed=cfg.seed, vad_lexicon=lexicon
    ).to(device)
    # foreach: one call per parameter group instead of a Python loop over the parameters
    # (on CUDA it is the default); the same updates on CPU, bit for bit (tested).
    optimizer = torch.optim.AdamW(
        model.parameter_groups(cfg.train.lr_decoder, cfg.train.lr_vad, cfg.train.weight_decay), foreach=True
    )
    steps_per_epoch = len(make_train_loader(data, batch_size=cfg.train.batch_size, seed=cfg.seed))
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _linear_schedule(cfg.train.warmup_steps, total)
    )
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Complete now: the training examples above counted their truncations into it.
    data.report.write_json(output_dir)
    return RunContext(
        cfg, device, tokenizer, data, classifier, model, optimizer, scheduler, scaler,
        use_amp, steps_per_epoch, total, output_dir, vocabulary(train["utterance"]),
    )


def _to_device(batch, device: torch.device):
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


def train_step(ctx: RunContext, batch: dict) -> dict[str, float]:
    ctx.model.train()
    batch = _to_device(batch, ctx.device)
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=ctx.use_amp):
        out = ctx.model(batch)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(out.loss).backward()
    if ctx.cfg.train.grad_clip:
        ctx.scaler.unscale_(ctx.optimizer)
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.cfg.train.grad_clip)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    ctx.scheduler.step()
    terms = {
        "loss": out.loss,
        "loss_language": out.loss_language,
        "loss_emotion": out.loss_emotion,
        "loss_contrastive": out.loss_contrastive,
    }
    return {k: float(v.detach()) for k, v in terms.items() if v is not None}


def evaluate_split(ctx: RunContext, split: str, step: int, seed_offset: int = 0):
    data = ctx.data.splits[split]
    ecfg = ctx.cfg.eval
    batches = eval_batches(ctx.data, split, ecfg.batch_size, ecfg.max_eval_paintings)
    start = time.perf_counter()
    generations = generate_explanations(
        ctx.model, batches, ecfg, ctx.device, seed=ctx.cfg.seed * 100_003 + step + seed_offset
    )
    seconds = time.perf_counter() - start
    evaluation = score_generations(
        generations, data.references, data.dominant, ctx.classifier, split, ecfg.use_meteor,
        vocabulary=ctx.vocabulary,
    )
    evaluation.metrics[f"{split}/{INFERENCE_SECONDS}"] = seconds / max(len(generations.texts), 1)
    return evaluation


def _improved(value: float | None, best: float | None) -> bool:
    return value is not None and (best is None or value > best)


class _Meter:
    """Running means of the training loss terms and throughput between two logs."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.samples = 0
        self.start = time.perf_counter()

    def add(self, terms: dict[str, float], batch_size: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.samples += batch_size

    def summary(self, device: torch.device) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {f"train/{k}": v / max(self.count, 1) for k, v in self.sums.items()}
        out["train/samples_per_s"] = self.samples / elapsed
        out["train/peak_memory_mb"] = peak_memory_mb(device)
        return out


def run_params(ctx: RunContext) -> dict:
    """What a run logs as its params: the flattened configuration, the data fingerprint,
    the code version, the EA classifier's identity and every count of the load report."""
    flat = to_flat_dict(ctx.cfg)
    flat["data.fingerprint"] = ctx.data.fingerprint
    flat["code_version"] = code_version()
    flat[EA_CLASSIFIER_PARAM] = ctx.classifier.dataset_fingerprint  # its identity (cache key)
    flat |= ctx.data.report.params()  # what loading did to the data, in every trial's params
    return flat


def run_training(
    cfg: ExperimentConfig,
    callbacks: Sequence[TrainingCallback] = (),
    resume_from: str | Path | None = None,
    progress: bool = False,
) -> RunResult:
    ctx = build_context(cfg)
    state = TrainingState()
    if resume_from is not None:
        state = load_checkpoint(
            resume_from, ctx.model, ctx.optimizer, ctx.scheduler, ctx.scaler, ctx.device
        )
        _restore_best(Path(resume_from), ctx.output_dir)
        log.info("resumed from %s at step %d", resume_from, state.step)

    flat = run_params(ctx)
    for cb in callbacks:
        cb.on_train_start(flat, state.step)

    stopped_early = _train(ctx, state, callbacks, progress)
    return _finish(ctx, state, callbacks, stopped_early)


def _train(ctx: RunContext, state: TrainingState, callbacks, progress: bool) -> bool:
    cfg = ctx.cfg
    eval_every = cfg.train.eval_every_steps or ctx.steps_per_epoch
    bar = _progress_bar(ctx, state, progress)
    meter = _Meter()
    interval = _Meter()  # since the last evaluation, for the evaluation's throughput
    while state.epoch < cfg.train.epochs and state.step < ctx.total_steps:
        loader = make_train_loader(ctx.data, batch_size=cfg.train.batch_size, seed=cfg.seed)
        # Resuming mid-epoch: the sampler skips the examples already seen (no re-collation).
        loader.sampler.set_epoch(state.epoch, skip=state.batch_in_epoch * cfg.train.batch_size)
        for batch in loader:
            terms = train_step(ctx, batch)
            state.step += 1
            state.batch_in_epoch += 1
            size = len(batch["painting_id"])
            meter.add(terms, size)
            interval.add(terms, size)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{terms['loss']:.3f}", epoch=state.epoch)
            if state.step % cfg.train.log_every_steps == 0:
                for cb in callbacks:
                    cb.on_train_log(state.step, meter.summary(ctx.device))
                meter.reset()
            end_of_epoch = state.batch_in_epoch == ctx.steps_per_epoch
            if end_of_epoch:
                state.epoch += 1
                state.batch_in_epoch = 0
            if state.step % eval_every == 0 or end_of_epoch or state.step >= ctx.total_steps:
                if _evaluate_and_checkpoint(ctx, state, callbacks, interval.summary(ctx.device)):
                    return True
                interval.reset()
            if state.step >= ctx.total_steps:
                break
            if end_of_epoch:
                break
    if bar is not None:
        bar.close()
    return False


def _progress_bar(ctx: RunContext, state: TrainingState, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=ctx.total_steps, initial=state.step, desc="training", unit="step")


def _evaluate_and_checkpoint(ctx, state: TrainingState, callbacks, train_metrics) -> bool:
    """Validate, checkpoint, notify. Returns True when early stopping triggers."""
    evaluation = evaluate_split(ctx, "val", state.step)
    metrics = {**train_metrics, **evaluation.metrics, "epoch": float(state.epoch)}
    monitored = metrics.get(ctx.cfg.train.monitor_metric)
    if monitored is None:
        raise KeyError(
            f"train.monitor_metric {ctx.cfg.train.monitor_metric!r} is not among the "
            f"validation metrics {sorted(evaluation.metrics)}"
        )
    is_best = _improved(monitored, state.best_metric)
    if is_best:
        state.best_metric, state.best_step = monitored, state.step
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    state.history.append({"step": state.step, **evaluation.metrics})

    ckpt_dir = ctx.output_dir / "checkpoints" / "latest"
    save_checkpoint(
        ckpt_dir, ctx.model, ctx.optimizer, ctx.scheduler, ctx.scaler, state, to_json(ctx.cfg)
    )
    best_file = ctx.output_dir / "checkpoints" / BEST_MODEL_FILE
    if is_best:
        shutil.copyfile(ckpt_dir / MODEL_FILE, best_file)
    # The best weights travel inside the checkpoint so that a trial resumed on another
    # node can still evaluate its best model on test.
    shutil.copyfile(best_file, ckpt_dir / BEST_MODEL_FILE)
    predictions = write_predictions(
        evaluation, ctx.output_dir / "predictions" / f"val_step{state.step:07d}.csv"
    )
    event = EvaluationEvent(
        step=state.step,
        epoch=state.epoch,
        metrics=metrics,
        checkpoint_dir=ckpt_dir,
        predictions_path=predictions,
        is_best=is_best,
    )
    for cb in callbacks:
        cb.on_evaluation(event)
    patience = ctx.cfg.train.early_stopping_patience
    return bool(patience) and state.evals_without_improvement >= patience


def _restore_best(checkpoint_dir: Path, output_dir: Path) -> None:
    source = checkpoint_dir / BEST_MODEL_FILE
    if source.is_file():
        target = output_dir / "checkpoints" / BEST_MODEL_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)


def _finish(ctx: RunContext, state: TrainingState, callbacks, stopped_early: bool) -> RunResult:
    best_file = ctx.output_dir / "checkpoints" / BEST_MODEL_FILE
    best_dir = None
    if best_file.is_file():
        best_dir = ctx.output_dir / "checkpoints" / "best"
        best_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best_file, best_dir / MODEL_FILE)
        (best_dir / "config.json").write_text(to_json(ctx.cfg))
        load_model_weights(best_dir, ctx.model, ctx.device)
    test = evaluate_split(ctx, "test", state.step, seed_offset=7)
    predictions = write_predictions(test, ctx.output_dir / "predictions" / "test.csv")
    samples = write_samples(ctx, test, ctx.output_dir / "samples")
    final = {
        **test.metrics,
        "best_step": float(state.best_step or state.step),
        TRAINABLE_PARAMETERS: float(sum(p.numel() for p in ctx.model.parameters() if p.requires_grad)),
        # EA is only as good as its classifier: report how well it reads held-out utterances.
        "ea_classifier/held_out_acc": 100.0 * float(ctx.classifier.held_out_accuracy),
    }
    if state.best_metric is not None:
        final[f"best_{ctx.cfg.train.monitor_metric}"] = state.best_metric
    (ctx.output_dir / "final_metrics.json").write_text(json.dumps(final, indent=2))
    result = RunResult(
        final_metrics=final,
        best_checkpoint_dir=best_dir,
        output_dir=ctx.output_dir,
        artifacts={
            "predictions_test": predictions,
            "samples": samples,
            "data_report": ctx.output_dir / REPORT_FILE,
        },
        stopped_early=stopped_early,
    )
    for cb in callbacks:
        cb.on_train_end(result)
    return result


def write_samples(ctx: RunContext, evaluation, directory: Path, n: int = 12) -> Path:
    """A few generated explanations next to copies of their images (for MLflow)."""
    directory.mkdir(parents=True, exist_ok=True)
    refs = ctx.data.splits["test"].references
    rows = []
    for row in evaluation.predictions.head(n).itertuples(index=False):
        image = ctx.data.image_paths.get(row.painting_id)
        copied = None
        if image is not None and Path(image).is_file():
            copied = directory / f"{len(rows):02d}{Path(image).suffix}"
            shutil.copyfile(image, copied)
        rows.append(
            {
                "painting_id": row.painting_id,
                "image": copied.name if copied else None,
                "dominant_emotion": row.dominant_emotion,
                "predicted_emotion": row.predicted_emotion,
                "closed_set_emotion": row.closed_set_emotion,
                "explanation": row.explanation,
                "references": refs[row.painting_id][:3],
            }
        )
    path = directory / "samples.json"
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    return path
