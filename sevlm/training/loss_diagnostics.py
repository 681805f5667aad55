"""How big each loss term and its gradient are over training: ``python -m sevlm.training.loss_diagnostics``.

Trains one configuration (the same data, model and optimiser as ``sevlm.train``) and every
``--every`` steps, before the optimiser step, measures for each enabled loss term
(language, emotion, alpha x contrastive):

- its value;
- the norm of its gradient on the parameters every variant shares (the GPT-2 decoder,
  its cross-attention and the image projection), each term on its own;
- the cosine between that gradient and the language term's gradient (negative: the term
  pulls the shared weights against the language model);
- the norm of the whole gradient and the factor by which ``train.grad_clip`` scales it
  (every term, the language term included, is scaled by that factor);
- how far each module has moved from its initial weights (relative drift);
- the contrastive scores S of the batch: the largest |S| (the reference code computes its
  loss as ``-log(exp(S+) / sum exp(S))`` without log-sum-exp, which overflows once a score
  passes ``log(float32 max)`` = 88.7, or 11.1 in fp16; this project's loss cannot) and the
  margin, the positive score minus the largest negative one (mean over the batch; a large
  margin means the head already tells the pairs apart and the loss has little left to say).

A term that drowns the language loss shows as a gradient norm well above the language
term's, a negative cosine, or a clip factor well below 1 that appears only when it is on.

    python -m sevlm.training.loss_diagnostics --preset tiny --steps 300 --every 25
    python -m sevlm.training.loss_diagnostics --set model.alpha=0.5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field

import torch

from sevlm.config import ExperimentConfig

TERMS = ("language", "emotion", "contrastive")


@dataclass
class TermSnapshot:
    value: float  # weighted as in the total loss (alpha x contrastive)
    grad_norm: float  # on the shared decoder parameters
    cosine_to_language: float


@dataclass
class Snapshot:
    step: int
    terms: dict[str, TermSnapshot]
    total_grad_norm: float  # all trainable parameters, before clipping
    clip_factor: float  # 1.0 = not clipped
    per_module_grad_norm: dict[str, float] = field(default_factory=dict)
    # ||W_t - W_0|| / ||W_0|| per module: how far training has moved it from its start
    # (the fusion starts as the identity; a large drift scrambles the word embeddings).
    per_module_drift: dict[str, float] = field(default_factory=dict)
    # The contrastive scores (None without the contrastive head): max |S| over the batch's
    # positives and valid negatives, and the mean of positive - max valid negative.
    max_abs_score: float | None = None
    score_margin: float | None = None


# Where exp(S) overflows: the reference code's un-stabilised loss fails above these.
EXP_OVERFLOW = {name: math.log(torch.finfo(getattr(torch, name)).max) for name in ("float16", "float32")}


def score_stats(scores: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[float, float]:
    """(max |S|, mean margin) of contrastive scores (B, 1 + n_neg), positive first.

    ``valid`` (B, n_neg) bool: negatives left out of a row's softmax are left out here too
    (a row without a valid negative has no margin and is not averaged).
    """
    scores = scores.detach().float()
    pos, neg = scores[:, 0], scores[:, 1:]
    keep = torch.ones_like(neg, dtype=torch.bool) if valid is None else valid.bool()
    max_abs = float(torch.where(torch.cat([torch.ones_like(pos, dtype=torch.bool)[:, None], keep], 1),
                                scores.abs(), torch.zeros((), dtype=scores.dtype)).max())
    best_neg = torch.where(keep, neg, torch.full((), float("-inf"))).max(dim=1).values
    rows = keep.any(dim=1)
    margin = float((pos - best_neg)[rows].mean()) if bool(rows.any()) else float("nan")
    return max_abs, margin


def negative_validity(model, batch: dict) -> torch.Tensor | None:
    """(B, n_neg) bool in the order of ``model.negatives`` (see SEVLM.forward)."""
    if not model.negatives:
        return None
    size = batch["input_ids"].shape[0]
    cols = []
    for name in model.negatives:
        valid = batch.get("neg_wrong_emotion_valid") if name == "neg_wrong_emotion" else None
        cols.append(torch.ones(size, dtype=torch.bool) if valid is None else valid.bool().cpu())
    return torch.stack(cols, dim=1)


def shared_parameters(model) -> list[torch.nn.Parameter]:
    """The decoder's parameters: what every ablation variant trains in common."""
    return [p for p in model.decoder.parameters() if p.requires_grad]


def weighted_terms(model, out) -> dict[str, torch.Tensor]:
    """Each enabled term as it enters the total loss."""
    terms = {"language": out.loss_language}
    if out.loss_emotion is not None:
        terms["emotion"] = out.loss_emotion
    if out.loss_contrastive is not None:
        terms["contrastive"] = model.alpha * out.loss_contrastive
    return terms


def modules_of(model) -> dict[str, torch.nn.Module]:
    """The model's trainable parts that exist in this variant."""
    modules = {"decoder": model.decoder, "vad_fusion": getattr(model.vad_model, "fusion", None),
               "emotion_encoder": getattr(model.vad_model, "encoder", None),
               "vad_head": model.vad_head, "contrastive_head": model.contrastive_head}
    return {name: m for name, m in modules.items() if m is not None}


def _weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).clone()


def _flat(grads, params) -> torch.Tensor:
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)
    ])


def measure(model, batch: dict, grad_clip: float
            ) -> tuple[dict[str, TermSnapshot], float, float, dict[str, float], tuple]:
    """Per-term values and gradients for one batch (no optimiser step, grads left clear),
    and the contrastive scores' (max |S|, margin) ((None, None) without the head)."""
    model.zero_grad(set_to_none=True)
    out = model(batch)
    scores = (None, None)
    if out.contrastive_scores is not None:
        scores = score_stats(out.contrastive_scores.cpu(), negative_validity(model, batch))
    shared = shared_parameters(model)
    terms = weighted_terms(model, out)
    flats = {}
    for name, value in terms.items():
        grads = torch.autograd.grad(value, shared, retain_graph=True, allow_unused=True)
        flats[name] = _flat(grads, shared)
    lang = flats["language"]
    snaps = {
        name: TermSnapshot(
            value=float(terms[name].detach()),
            grad_norm=float(g.norm()),
            # float64: in float32 the cosine of a long gradient with itself can read 1.0001
            cosine_to_language=float(torch.nn.functional.cosine_similarity(g.double(), lang.double(), dim=0)),
        )
        for name, g in flats.items()
    }
    out.loss.backward()
    per_module = {}
    for name, module in modules_of(model).items():
        gs = [p.grad.reshape(-1) for p in module.parameters() if p.grad is not None]
        if gs:
            per_module[name] = float(torch.cat(gs).norm())
    all_grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
    total = float(torch.cat(all_grads).norm())
    clip = min(1.0, grad_clip / (total + 1e-6)) if grad_clip else 1.0
    model.zero_grad(set_to_none=True)
    return snaps, total, clip, per_module, scores


def run(cfg: ExperimentConfig, steps: int, every: int, stream=None) -> list[Snapshot]:
    """Train ``steps`` steps of ``cfg``; measure every ``every`` steps (and at step 0)."""
    stream = stream or sys.stdout  # read now: whoever imported this module may have swapped it since
    from sevlm.data import make_train_loader
    from sevlm.training.loop import _to_device, build_context, train_step

    ctx = build_context(cfg)
    initial = {name: _weights(m) for name, m in modules_of(ctx.model).items()}
    snapshots: list[Snapshot] = []
    step = 0
    epoch = 0
    while step < steps:
        loader = make_train_loader(ctx.data, batch_size=cfg.train.batch_size, seed=cfg.seed)
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if step % every == 0 or step == steps - 1:
                ctx.model.train()
                terms, total, clip, modules, (max_abs, margin) = measure(
                    ctx.model, _to_device(batch, ctx.device), cfg.train.grad_clip
                )
                drift = {
                    name: float((_weights(m) - initial[name]).norm() / initial[name].norm().clamp(min=1e-12))
                    for name, m in modules_of(ctx.model).items()
                }
                snap = Snapshot(step, terms, total, clip, modules, drift, max_abs, margin)
                snapshots.append(snap)
                print(format_snapshot(snap, header=len(snapshots) == 1), file=stream, flush=True)
            train_step(ctx, batch)
            step += 1
            if step >= steps:
                break
        epoch += 1
    return snapshots


def format_snapshot(snap: Snapshot, header: bool = False) -> str:
    cols = ["step"]
    for t in TERMS:
        cols += [f"{t[:4]}", f"|g {t[:4]}|", f"cos"]
    cols += ["|g all|", "clip", "max|S|", "margin"]
    row = [f"{snap.step:5d}"]
    for t in TERMS:
        s = snap.terms.get(t)
        row += ["-", "-", "-"] if s is None else [
            f"{s.value:.3f}", f"{s.grad_norm:.3f}", f"{s.cosine_to_language:+.2f}"
        ]
    row += [f"{snap.total_grad_norm:.3f}", f"{snap.clip_factor:.2f}"]
    row += ["-", "-"] if snap.max_abs_score is None else [f"{snap.max_abs_score:.2f}", f"{snap.score_margin:+.2f}"]
    line = "  ".join(f"{c:>9}" for c in row)
    line += "   drift " + " ".join(f"{k}={v:.2f}" for k, v in snap.per_module_drift.items())
    if header:
        return "  ".join(f"{c:>9}" for c in cols) + "\n" + line
    return line


def overflow_note(snapshots: list[Snapshot]) -> str | None:
    """A line when some score would have overflowed the reference code's loss."""
    worst = max((s.max_abs_score for s in snapshots if s.max_abs_score is not None), default=None)
    if worst is None:
        return None
    over = [name for name, limit in EXP_OVERFLOW.items() if worst > limit]
    if over:
        return (f"largest |S| {worst:.1f}: past where exp(S) overflows (S > 0) or vanishes (S < 0) in "
                f"{' and '.join(over)}, so the reference code's contrastive loss, computed without "
                "log-sum-exp, would have been inf/NaN or cut off here (this project's is not)")
    return (f"largest |S| {worst:.1f}: below the overflow of exp(S) in fp16 ({EXP_OVERFLOW['float16']:.1f}) "
            f"and float32 ({EXP_OVERFLOW['float32']:.1f})")


def all_finite(snapshots: list[Snapshot]) -> bool:
    return all(
        math.isfinite(v)
        for s in snapshots
        for t in s.terms.values()
        for v in (t.value, t.grad_norm, t.cosine_to_language)
    )


def main(argv: list[str] | None = None) -> int:
    from sevlm.train import build_parser, resolve_config

    parser = build_parser()
    parser.prog = "python -m sevlm.training.loss_diagnostics"
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--every", type=int, default=25, help="measure every N steps (default 25)")
    parser.add_argument("--json", help="also write every snapshot to this JSON file")
    args = parser.parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    snapshots = run(cfg, args.steps, args.every)
    note = overflow_note(snapshots)
    if note:
        print(note)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([asdict(s) for s in snapshots], f, indent=1)
    return 0 if all_finite(snapshots) else 1


if __name__ == "__main__":
    sys.exit(main())
