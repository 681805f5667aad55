"""Generate on a split and compute ACC, closed-set ACC, EA, BLEU-1..4, METEOR, ROUGE-L, CIDEr,
Unique and the non-word rate.

One generation per painting (image + prompt "the emotion is"), compared with all reference
explanations of that painting. Metrics are reported in percent, as in the paper's tables.
A predictions CSV holds the per-painting values the paired significance tests use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from sevlm.config import EvalConfig
from sevlm.emotions import EMOTIONS
from sevlm.metrics import accuracy, emotion_alignment, score_explanations, unique_ratio
from sevlm.metrics.corpus_stats import STAT_COLUMNS
from sevlm.metrics.vocabulary import count_nonwords, nonword_rate
from sevlm.text import parse_generation

# Per painting: what was generated and its scores. "bleu4" and "meteor" are coco-caption's
# per-image values (not corpus scores of one painting); corpus BLEU, CIDEr and ROUGE-L of
# any resample are recomputed from the sufficient statistics (STAT_COLUMNS; "cider" and
# "rouge_l" are among them), METEOR only as a mean of segment scores.
_PREDICTION_BASE_COLUMNS = [
    "painting_id",
    "dominant_emotion",
    "predicted_emotion",
    "closed_set_emotion",
    "explanation",
    "bleu4",
    "meteor",
    "rouge_l",
    "cider",
    "ea_correct",
    "nonwords",
    "words",
]
PREDICTION_COLUMNS = _PREDICTION_BASE_COLUMNS + [
    c for c in STAT_COLUMNS if c not in _PREDICTION_BASE_COLUMNS
]


@dataclass
class Evaluation:
    metrics: dict[str, float]  # "<split>/acc", "<split>/bleu4", ... in percent
    predictions: pd.DataFrame  # PREDICTION_COLUMNS


@dataclass
class Generations:
    texts: dict[str, str]  # painting id -> decoded generation (emotion words + explanation)
    closed_set: dict[str, str]  # painting id -> most likely emotion prompt


@torch.no_grad()
def generate_explanations(
    model, batches, eval_cfg: EvalConfig, device: torch.device, seed: int,
    closed_set: Callable[[torch.Tensor], list[str]] | None = None,
) -> Generations:
    """One generation and one closed-set emotion per painting. ``closed_set`` picks the
    emotions of a batch of image features (default: the most likely ArtEmis emotion)."""
    if closed_set is None:
        closed_set = lambda features: [EMOTIONS[e] for e in  # noqa: E731
                                       model.emotion_log_likelihoods(features).argmax(dim=1).tolist()]
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    texts: dict[str, str] = {}
    closed: dict[str, str] = {}
    try:
        for painting_ids, features in batches:
            features = features.to(device)
            ids = model.generate(
                features,
                max_new_tokens=eval_cfg.max_new_tokens,
                decoding=eval_cfg.decoding,
                top_p=eval_cfg.top_p,
                temperature=eval_cfg.temperature,
                generator=generator,
            )
            texts.update((pid, model.tokenizer.decode(seq)) for pid, seq in zip(painting_ids, ids, strict=True))
            closed.update(zip(painting_ids, closed_set(features), strict=True))
    finally:
        model.train(was_training)
    return Generations(texts, closed)


def score_generations(
    generations: Generations,
    references: dict[str, list[str]],
    dominant: dict[str, str | None],
    classifier,
    split: str,
    use_meteor: bool = True,
    vocabulary: frozenset[str] = frozenset(),
) -> Evaluation:
    """``vocabulary``: the training utterances' words (see sevlm.metrics.vocabulary)."""
    texts = generations.texts
    parsed = {pid: parse_generation(text) for pid, text in texts.items()}
    emotions = {pid: emo for pid, (emo, _) in parsed.items()}
    explanations = {pid: expl for pid, (_, expl) in parsed.items()}
    refs = {pid: references[pid] for pid in texts}
    dom = {pid: dominant[pid] for pid in texts}
    nonwords = count_nonwords(explanations, vocabulary)

    captions = score_explanations(explanations, refs, use_meteor=use_meteor)
    ea, ea_correct = emotion_alignment(classifier, explanations, dom)
    metrics = {
        "acc": accuracy(emotions, dom),
        "closed_acc": accuracy(generations.closed_set, dom),
        "ea": ea,
        "bleu1": captions.bleu1,
        "bleu2": captions.bleu2,
        "bleu3": captions.bleu3,
        "bleu4": captions.bleu4,
        "meteor": captions.meteor,
        "rouge_l": captions.rouge_l,
        "cider": captions.cider,
        "unique": unique_ratio(list(explanations.values())),
        "nonword_rate": nonword_rate(nonwords),
        "no_emotion_rate": no_emotion_rate(emotions),
    }
    metrics = {f"{split}/{k}": 100.0 * float(v) for k, v in metrics.items() if v is not None}
    metrics[f"{split}/paintings"] = float(len(texts))

    rows = []
    for pid in sorted(texts):
        per = captions.per_painting.get(pid, {})
        rows.append(
            {
                "painting_id": pid,
                "dominant_emotion": dom[pid],
                "predicted_emotion": emotions[pid],
                "closed_set_emotion": generations.closed_set.get(pid),
                "explanation": explanations[pid],
                "bleu4": per.get("bleu4"),
                "meteor": per.get("meteor"),
                "rouge_l": per.get("rouge_l"),
                "cider": per.get("cider"),
                "ea_correct": ea_correct.get(pid),
                "nonwords": nonwords[pid][0],
                "words": nonwords[pid][1],
                **captions.statistics.loc[pid].to_dict(),
            }
        )
    return Evaluation(metrics, pd.DataFrame(rows, columns=PREDICTION_COLUMNS))


def no_emotion_rate(emotions: dict[str, str | None]) -> float | None:
    """Share of paintings whose generation names no emotion (None when there is none)."""
    if not emotions:
        return None
    return sum(e is None for e in emotions.values()) / len(emotions)


def write_predictions(evaluation: Evaluation, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    evaluation.predictions.to_csv(path, index=False)
    return path
