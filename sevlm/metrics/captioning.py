"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) of generated explanations.

Everything goes through pycocoevalcap so that our numbers are comparable with the
ArtEmis / captioning literature. Only the *explanation* is scored (never the emotion
prefix) against all reference explanations of the painting. Each scorer returns a corpus
score and per-painting scores; the latter feed paired significance tests, so the mapping
per-image value -> painting id is kept explicit (ids sorted, dicts built in that order).

Java is spawned twice per call: once for the PTB tokenizer (one call for references and
predictions together) and once for the METEOR JVM, which is always shut down before
returning, also on errors, so no Java process outlives the call. Each call owns its
subprocesses, so concurrent calls from several threads of one process are safe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from sevlm.metrics.corpus_stats import tokenized_statistics

# An empty (or punctuation-only) generated explanation is scored as this single token.
# Why: pycocoevalcap's METEOR wrapper talks to Java line by line and is fragile on empty
# hypotheses, and ROUGE-L scores an empty hypothesis against an empty reference as a
# perfect match. One token that never occurs in references gives 0 on every metric,
# which is what an empty explanation deserves, and the same input for all scorers.
EMPTY_HYPOTHESIS_PLACEHOLDER = "emptyexplanationplaceholder"

# METEOR's wire protocol separates fields by "|||"; pycocoevalcap strips it from the
# hypothesis only, a reference containing it would desynchronise the JVM.
_METEOR_FIELD_SEPARATOR = "|||"

# A hung METEOR JVM is killed after this long, turning a silent hang into an error.
METEOR_TIMEOUT_S = 1800.0

PER_PAINTING_METRICS: tuple[str, ...] = ("bleu4", "meteor", "rouge_l", "cider")


@dataclass(frozen=True)
class CaptionScores:
    """Corpus and per-painting caption scores, on the scale the scorers return.

    BLEU, METEOR and ROUGE-L lie in 0..1; CIDEr is unbounded (about 0..10, usually
    reported x100 elsewhere, we keep the raw value). ``meteor`` is None when METEOR was
    disabled. ``per_painting`` maps painting id -> {"bleu4", "meteor", "rouge_l",
    "cider"} (meteor None when disabled), for paired tests between runs.
    """

    bleu1: float
    bleu2: float
    bleu3: float
    bleu4: float
    meteor: float | None
    rouge_l: float
    cider: float
    per_painting: dict[str, dict[str, float | None]] = field(repr=False)
    # Per painting (index, sorted ids): the sufficient statistics of corpus BLEU, CIDEr and
    # ROUGE-L (sevlm.metrics.corpus_stats.STAT_COLUMNS), for resampling tests.
    statistics: pd.DataFrame | None = field(default=None, repr=False)

    def corpus(self) -> dict[str, float]:
        """Corpus scores by name, without disabled metrics (ready for metric logging)."""
        values = {
            "bleu1": self.bleu1,
            "bleu2": self.bleu2,
            "bleu3": self.bleu3,
            "bleu4": self.bleu4,
            "meteor": self.meteor,
            "rouge_l": self.rouge_l,
            "cider": self.cider,
        }
        return {name: value for name, value in values.items() if value is not None}

    def per_painting_values(self, metric: str) -> dict[str, float | None]:
        """One per-painting metric as painting id -> value (ids sorted)."""
        if metric not in PER_PAINTING_METRICS:
            raise KeyError(f"unknown per-painting metric {metric!r}; use one of {PER_PAINTING_METRICS}")
        return {pid: scores[metric] for pid, scores in sorted(self.per_painting.items())}


def score_explanations(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    use_meteor: bool = True,
) -> CaptionScores:
    """Score generated explanations against the reference explanations of each painting.

    ``predictions`` maps painting id -> generated explanation, ``references`` painting id
    -> its reference explanations. Both must have the same ids (ValueError naming the
    missing ones otherwise) and every painting needs a non-empty reference.
    """
    ids = _check_inputs(predictions, references)
    gts, res = _tokenize(ids, predictions, references)
    bleu_corpus, bleu_per_n = Bleu(4).compute_score(gts, res, verbose=0)
    rouge_corpus, rouge_per = Rouge().compute_score(gts, res)
    cider_corpus, cider_per = Cider().compute_score(gts, res)
    meteor_corpus: float | None = None
    meteor_per: Sequence[float] | None = None
    if use_meteor:
        meteor_corpus, meteor_per = _meteor_scores(gts, res)
    per_painting = {
        pid: {
            "bleu4": float(bleu_per_n[3][i]),
            "meteor": None if meteor_per is None else float(meteor_per[i]),
            "rouge_l": float(rouge_per[i]),
            "cider": float(cider_per[i]),
        }
        for i, pid in enumerate(ids)
    }
    return CaptionScores(
        bleu1=float(bleu_corpus[0]),
        bleu2=float(bleu_corpus[1]),
        bleu3=float(bleu_corpus[2]),
        bleu4=float(bleu_corpus[3]),
        meteor=None if meteor_corpus is None else float(meteor_corpus),
        rouge_l=float(rouge_corpus),
        cider=float(cider_corpus),
        per_painting=per_painting,
        statistics=tokenized_statistics(gts, res),
    )


def _check_inputs(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> list[str]:
    """Validate ids and types early (before Java starts); return the sorted painting ids."""
    missing_refs = sorted(set(predictions) - set(references), key=str)
    missing_preds = sorted(set(references) - set(predictions), key=str)
    if missing_refs or missing_preds:
        parts = []
        if missing_refs:
            parts.append(f"ids without references: {_preview(missing_refs)}")
        if missing_preds:
            parts.append(f"ids without predictions: {_preview(missing_preds)}")
        raise ValueError("predictions and references have different painting ids; " + "; ".join(parts))
    if not predictions:
        raise ValueError("no predictions to score")
    for pid, text in predictions.items():
        if not isinstance(text, str):
            raise TypeError(f"prediction of painting {pid!r} is {type(text).__name__}, expected str")
    no_refs = [pid for pid, refs in references.items() if isinstance(refs, str) or not any(_clean(r) for r in refs)]
    if no_refs:
        raise ValueError(f"paintings without a non-empty reference (a list of str): {_preview(sorted(no_refs, key=str))}")
    return sorted(predictions)


def _preview(ids: Sequence[Any], limit: int = 20) -> str:
    """The ids for an error message, cut after ``limit`` so messages stay readable."""
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _clean(text: str) -> str:
    """One line of single-spaced text without METEOR's field separator.

    Why: the PTB tokenizer is run with -preserveLines and results are matched back by
    line number, so any line break (including Unicode ones such as U+2028, which
    ``str.split`` knows) inside a caption would shift every later caption.
    """
    return " ".join(text.replace(_METEOR_FIELD_SEPARATOR, " ").split())


def _tokenize(
    ids: Sequence[str],
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """PTB-tokenize references and predictions in one Java call; return (gts, res).

    Both dicts are built in the order of ``ids`` because the scorers return per-image
    values in key order.
    """
    placeholder = [{"caption": EMPTY_HYPOTHESIS_PLACEHOLDER}]
    request: dict[tuple[str, str], list[dict[str, str]]] = {}
    for pid in ids:
        request[("ref", pid)] = [{"caption": c} for c in map(_clean, references[pid]) if c]
        hypothesis = _clean(predictions[pid])
        request[("hyp", pid)] = [{"caption": hypothesis}] if hypothesis else placeholder
    tokens = PTBTokenizer().tokenize(request)
    _check_tokenized(request, tokens)
    gts: dict[str, list[str]] = {}
    res: dict[str, list[str]] = {}
    for pid in ids:
        gts[pid] = [r for r in tokens[("ref", pid)] if r]
        res[pid] = [tokens[("hyp", pid)][0] or EMPTY_HYPOTHESIS_PLACEHOLDER]
    no_refs = [pid for pid in ids if not gts[pid]]
    if no_refs:
        raise ValueError(f"paintings whose references are empty after tokenization: {_preview(no_refs)}")
    return gts, res


def _check_tokenized(request: Mapping[Any, list[Any]], tokens: Mapping[Any, list[str]]) -> None:
    """Fail loudly if the tokenizer returned a different number of lines than it got."""
    for key, captions in request.items():
        if len(tokens.get(key, [])) != len(captions):
            raise RuntimeError(
                f"PTB tokenizer returned {len(tokens.get(key, []))} captions for {key!r}, "
                f"expected {len(captions)}; captions and scores would be misaligned"
            )


def _meteor_scores(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, list[float]]:
    """METEOR corpus and per-image scores from a JVM that is closed before returning."""
    with _meteor_process() as meteor:
        try:
            score, scores = meteor.compute_score(gts, res)
        except ValueError as exc:  # float("") when the JVM died or was killed
            raise RuntimeError(
                "METEOR JVM stopped answering (crashed, or killed after "
                f"{METEOR_TIMEOUT_S:.0f} s); see Java's stderr"
            ) from exc
    return float(score), [float(s) for s in scores]


@contextmanager
def _meteor_process() -> Iterator[Meteor]:
    """A fresh pycocoevalcap METEOR scorer whose JVM is always stopped afterwards.

    Meteor() starts ``java -jar meteor-1.5.jar`` on construction and only stops it in
    ``__del__``, which may run late or never; we stop it explicitly. A watchdog kills the
    JVM if scoring hangs, so the readline in pycocoevalcap returns and we raise.
    """
    meteor = Meteor()
    watchdog = threading.Timer(METEOR_TIMEOUT_S, meteor.meteor_p.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield meteor
    finally:
        watchdog.cancel()
        _stop_meteor(meteor)


def _stop_meteor(meteor: Meteor) -> None:
    """Close the JVM's pipes, kill it and reap it (idempotent with Meteor.__del__)."""
    process = meteor.meteor_p
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    process.kill()
    process.wait()
