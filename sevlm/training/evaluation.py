"""Generate on a split and compute ACC, EA, BLEU-1..4, METEOR, ROUGE-L, CIDEr and Unique.

One generation per painting (image + prompt "the emotion is"), compared with all reference
explanations of that painting. Metrics are reported in percent, as in the paper's tables.
A predictions CSV holds the per-painting values the paired significance tests use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from sevlm.config import EvalConfig
from sevlm.metrics import accuracy, emotion_alignment, score_explanations, unique_ratio
from sevlm.text import parse_generation

PREDICTION_COLUMNS = [
    "painting_id",
    "dominant_emotion",
    "predicted_emotion",
    "explanation",
    "bleu4",
    "meteor",
    "rouge_l",
    "cider",
    "ea_correct",
]


@dataclass
class Evaluation:
    metrics: dict[str, float]  # "<split>/acc", "<split>/bleu4", ... in percent
    predictions: pd.DataFrame  # PREDICTION_COLUMNS


@torch.no_grad()
def generate_explanations(
    model, batches, eval_cfg: EvalConfig, device: torch.device, seed: int
) -> dict[str, str]:
    """painting_id -> decoded generation (emotion words + explanation)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    out: dict[str, str] = {}
    try:
        for painting_ids, features in batches:
            ids = model.generate(
                features.to(device),
                max_new_tokens=eval_cfg.max_new_tokens,
                decoding=eval_cfg.decoding,
                top_p=eval_cfg.top_p,
                temperature=eval_cfg.temperature,
                generator=generator,
            )
            for pid, seq in zip(painting_ids, ids, strict=True):
                out[pid] = model.tokenizer.decode(seq)
    finally:
        model.train(was_training)
    return out


def score_generations(
    generations: dict[str, str],
    references: dict[str, list[str]],
    dominant: dict[str, str | None],
    classifier,
    split: str,
    use_meteor: bool = True,
) -> Evaluation:
    parsed = {pid: parse_generation(text) for pid, text in generations.items()}
    emotions = {pid: emo for pid, (emo, _) in parsed.items()}
    explanations = {pid: expl for pid, (_, expl) in parsed.items()}
    refs = {pid: references[pid] for pid in generations}
    dom = {pid: dominant[pid] for pid in generations}

    captions = score_explanations(explanations, refs, use_meteor=use_meteor)
    ea, ea_correct = emotion_alignment(classifier, explanations, dom)
    metrics = {
        "acc": accuracy(emotions, dom),
        "ea": ea,
        "bleu1": captions.bleu1,
        "bleu2": captions.bleu2,
        "bleu3": captions.bleu3,
        "bleu4": captions.bleu4,
        "meteor": captions.meteor,
        "rouge_l": captions.rouge_l,
        "cider": captions.cider,
        "unique": unique_ratio(list(explanations.values())),
    }
    metrics = {f"{split}/{k}": 100.0 * float(v) for k, v in metrics.items() if v is not None}
    metrics[f"{split}/paintings"] = float(len(generations))

    rows = []
    for pid in sorted(generations):
        per = captions.per_painting.get(pid, {})
        rows.append(
            {
                "painting_id": pid,
                "dominant_emotion": dom[pid],
                "predicted_emotion": emotions[pid],
                "explanation": explanations[pid],
                "bleu4": per.get("bleu4"),
                "meteor": per.get("meteor"),
                "rouge_l": per.get("rouge_l"),
                "cider": per.get("cider"),
                "ea_correct": ea_correct.get(pid),
            }
        )
    return Evaluation(metrics, pd.DataFrame(rows, columns=PREDICTION_COLUMNS))


def write_predictions(evaluation: Evaluation, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    evaluation.predictions.to_csv(path, index=False)
    return path
