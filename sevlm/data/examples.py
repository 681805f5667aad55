"""Training examples: one item per training annotation with its two contrastive negatives,
the collate contract, the epoch-aware sampler and the training loader.

Training examples (:class:`TrainingExamples`, one per training annotation) carry what the
contrastive head needs:

- the positive full sentence ``<bos> the emotion is <e> because <X> <eos>``;
- ``neg_wrong_emotion`` (X≠M): an annotation of the **same painting** whose emotion differs
  from the positive's. When the painting has none (its annotators were unanimous), the
  fallback is an annotation of **another painting** with a different emotion: still an
  explanation of a wrong emotion, so ``neg_wrong_emotion_valid`` stays True. Such items
  are counted (``TrainingExamples.stats["wrong_emotion_fallback_items"]``, also in the load
  report); unanimous paintings are never dropped. ``valid`` is False only if no annotation
  of the whole split has another emotion;
- ``neg_other_image`` (X≠I): an annotation of another painting.

A negative is that annotation's own full sentence (its own emotion prompt and explanation)
with its own painting's features: the contrastive head compares the anchor's image and
emotion with the features of a real explanation (see ``sevlm.model.sevlm``).

No negative ever has the positive's text. Negatives are drawn with
``numpy.random.default_rng((seed, epoch, index))``: deterministic per seed, epoch and item,
whatever the worker layout. :class:`EpochSampler` passes the epoch along with each index
(and shuffles with ``default_rng((seed, epoch))``); it advances the epoch on every pass, and
``set_epoch`` pins it (for resuming).

Utterances are tokenised once, at construction (every distinct word once, with the
tokenizer's own ``encode_text`` and the lexicon), and each sentence is assembled with the
layout of :meth:`SEVLMTokenizer.encode_full_sentence`; the construction checks a sample of
assembled sentences against ``encode_full_sentence`` so the two can never drift apart.
Sentences longer than the model length are cut there, and counted there
(``stats["truncated_sentences"]``; the training split's count goes into the load report).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sevlm.data.feature_cache import FeatureCache
from sevlm.data.pipeline import PreparedData, SplitData
from sevlm.emotions import EMOTION_TO_INDEX, EMOTIONS
from sevlm.text import CONNECTIVE, IGNORE_INDEX, normalize_whitespace

log = logging.getLogger(__name__)

# Load-report note: training sentences cut at the model length (L tokens).
TRUNCATION_NOTE = "train_sentences_truncated_at_max_length"

# -------------------------------------------------------------------- sentences


class _SentenceBuilder:
    """Assembles full sentences from pre-tokenised explanations (layout of
    ``SEVLMTokenizer.encode_full_sentence``)."""

    def __init__(self, tokenizer, lexicon, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.lexicon = lexicon
        self.L = int(max_length)
        self.n_fixed = 1 + len(tokenizer.prompt_ids)  # <bos> "the emotion is": no labels
        self.prompts = [
            np.array([tokenizer.bos_id, *tokenizer.prompt_ids, *tokenizer.emotion_ids[e]], dtype=np.int64) for e in EMOTIONS
        ]
        self.connective_vad = np.array(self._vad(CONNECTIVE), dtype=np.float32)
        self._word_cache: dict[str, tuple[list[int], list[tuple[float, float, float]]]] = {}

    def _vad(self, key: str) -> tuple[float, float, float]:
        return (0.0, 0.0, 0.0) if self.lexicon is None else tuple(self.lexicon(key))

    def explanation(self, text: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids incl. the connective, their VAD rows, full length), capped at L tokens."""
        ids: list[int] = [self.tokenizer.connective_id]
        vad: list[tuple[float, float, float]] = [tuple(self.connective_vad)]
        for word in normalize_whitespace(text).split(" "):
            if not word:
                continue
            hit = self._word_cache.get(word)
            if hit is None:
                word_ids = self.tokenizer.encode_text(" " + word)
                keys = self.tokenizer.piece_word_keys(word_ids)
                hit = (word_ids, [self._vad(k) for k in keys])
                self._word_cache[word] = hit
            ids.extend(hit[0])
            vad.extend(hit[1])
        n = len(ids)
        return np.array(ids[: self.L], dtype=np.int32), np.array(vad[: self.L], dtype=np.float32).reshape(-1, 3), n

    def build(self, emotion: int, ids: np.ndarray, vad: np.ndarray, n_full: int | None = None) -> dict[str, np.ndarray]:
        tok, L = self.tokenizer, self.L
        prompt = self.prompts[emotion]
        n_prompt = len(prompt)
        room = L - n_prompt - 1
        if room < 1:
            raise ValueError(f"max_length={L} leaves no room for an explanation")
        ex = ids[:room]
        n = n_prompt + len(ex) + 1
        input_ids = np.full(L, tok.pad_id, dtype=np.int64)
        input_ids[:n_prompt] = prompt
        input_ids[n_prompt : n - 1] = ex
        input_ids[n - 1] = tok.eos_id
        segment_ids = np.full(L, tok.explanation_segment_id, dtype=np.int64)
        segment_ids[:n_prompt] = tok.prompt_segment_id
        attention = np.zeros(L, dtype=np.int64)
        attention[:n] = 1
        labels = np.full(L, IGNORE_INDEX, dtype=np.int64)
        labels[self.n_fixed : n] = input_ids[self.n_fixed : n]
        vad_rows = np.zeros((L, 3), dtype=np.float32)
        vad_rows[n_prompt : n - 1] = vad[:room]
        prompt_mask = np.zeros(L, dtype=bool)
        prompt_mask[:n_prompt] = True
        explanation_mask = np.zeros(L, dtype=bool)
        explanation_mask[n_prompt:n] = True
        return {
            "input_ids": input_ids,
            "segment_ids": segment_ids,
            "attention_mask": attention,
            "labels": labels,
            "vad": vad_rows,
            "prompt_mask": prompt_mask,
            "explanation_mask": explanation_mask,
            "truncated": (len(ids) if n_full is None else n_full) > room,
        }

    def check_against_tokenizer(self, emotion: int, text: str) -> None:
        """Raise if the assembled sentence differs from ``encode_full_sentence``."""
        ids, vad, n_full = self.explanation(text)
        mine = self.build(emotion, ids, vad, n_full)
        ref = self.tokenizer.encode_full_sentence(EMOTIONS[emotion], text, vad=self.lexicon, max_length=self.L)
        for key in ("input_ids", "segment_ids", "attention_mask", "labels", "prompt_mask", "explanation_mask"):
            if not np.array_equal(mine[key], np.asarray(getattr(ref, key), dtype=mine[key].dtype)):
                raise AssertionError(f"sentence layout differs from encode_full_sentence on {key!r} for {text!r}")
        if not np.allclose(mine["vad"], np.asarray(ref.vad, dtype=np.float32), atol=1e-6):
            raise AssertionError(f"VAD rows differ from encode_full_sentence for {text!r}")
        if bool(mine["truncated"]) != bool(ref.truncated):
            raise AssertionError(f"truncation flag differs from encode_full_sentence for {text!r}")


# ---------------------------------------------------------------- training items


class TrainingExamples(Dataset):
    """One item per training annotation, with its two contrastive negatives."""

    def __init__(
        self,
        split: SplitData,
        features: FeatureCache | None,
        tokenizer,
        lexicon,
        max_length: int = 30,
        seed: int = 0,
        check_samples: int = 16,
    ) -> None:
        ann = split.annotations.reset_index(drop=True)
        if ann["painting_id"].nunique() < 2:
            raise ValueError("contrastive negatives need at least two paintings in the split")
        self.split = split
        self.features = features
        self.seed = int(seed)
        self.epoch = 0
        self.builder = _SentenceBuilder(tokenizer, lexicon, max_length)
        self.painting_ids = ann["painting_id"].to_numpy(dtype=object)
        self.paintings, self.painting_code = np.unique(self.painting_ids, return_inverse=True)
        self.painting_code = self.painting_code.astype(np.int64)
        self.emotions = ann["emotion"].map(EMOTION_TO_INDEX).to_numpy(dtype=np.int64)
        self.utterances = ann["utterance"].tolist()
        self.text_code = pd.factorize(ann["utterance"])[0].astype(np.int64)

        # Pre-tokenise every explanation once (ragged arrays).
        lengths = np.zeros(len(ann), dtype=np.int64)
        full_lengths = np.zeros(len(ann), dtype=np.int64)
        ids_parts, vad_parts = [], []
        for i, text in enumerate(self.utterances):
            ids, vad, n_full = self.builder.explanation(text)
            ids_parts.append(ids)
            vad_parts.append(vad)
            lengths[i], full_lengths[i] = len(ids), n_full
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])
        self._ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
        self._vad = np.concatenate(vad_parts) if vad_parts else np.zeros((0, 3), np.float32)
        self._full_lengths = full_lengths

        # Guard: assembled sentences == tokenizer.encode_full_sentence (sample, every emotion).
        rng = np.random.default_rng(0)
        for i in rng.choice(len(ann), size=min(check_samples, len(ann)), replace=False):
            self.builder.check_against_tokenizer(int(self.emotions[i]), self.utterances[i])
            self.builder.check_against_tokenizer(int(rng.integers(len(EMOTIONS))), self.utterances[i])

        # Members of each painting; which items have a same-painting X≠M candidate.
        order = np.argsort(self.painting_code, kind="stable")
        bounds = np.flatnonzero(np.diff(self.painting_code[order])) + 1
        self._members = np.split(order, bounds)
        # Same-painting X≠M candidates of item i: members of its painting with another
        # emotion, minus those among them that have the same text.
        keys = pd.DataFrame({"p": self.painting_code, "e": self.emotions, "t": self.text_code})
        size = lambda cols: keys.groupby(cols)["p"].transform("size").to_numpy()  # noqa: E731
        candidates = (size(["p"]) - size(["p", "e"])) - (size(["p", "t"]) - size(["p", "e", "t"]))
        has_same = candidates > 0
        self._has_same_painting_negative = has_same
        self._any_other_emotion = np.array([np.any(self.emotions != e) for e in range(len(EMOTIONS))])

        rooms = np.array([max_length - len(p) - 1 for p in self.builder.prompts])
        truncated = int((full_lengths > rooms[self.emotions]).sum())
        n_emotions = ann.groupby("painting_id")["emotion"].nunique()
        self.stats = {
            "items": len(ann),
            "paintings": len(self.paintings),
            "unanimous_paintings": int((n_emotions == 1).sum()),
            "wrong_emotion_fallback_items": int((~has_same).sum()),
            "no_wrong_emotion_negative_items": int((~self._any_other_emotion[self.emotions]).sum()),
            "truncated_sentences": int(truncated),
        }
        if self.stats["wrong_emotion_fallback_items"]:
            log.info(
                "X≠M negatives: %d of %d training items (%d unanimous paintings) take an utterance "
                "of another painting with a different emotion",
                self.stats["wrong_emotion_fallback_items"],
                len(ann),
                self.stats["unanimous_paintings"],
            )

    def __len__(self) -> int:
        return len(self.emotions)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for negatives when items are requested by a plain integer index."""
        self.epoch = int(epoch)

    # ---------------------------------------------------------------- negatives

    def _explanation(self, j: int) -> tuple[np.ndarray, np.ndarray, int]:
        a, b = self._offsets[j], self._offsets[j + 1]
        return self._ids[a:b], self._vad[a:b], int(self._full_lengths[j])

    def _draw(self, rng: np.random.Generator, accept) -> int | None:
        n = len(self.emotions)
        for j in rng.integers(0, n, size=32):
            if accept(int(j)):
                return int(j)
        start = int(rng.integers(n))  # rare: scan everything from a random start
        for k in range(n):
            j = (start + k) % n
            if accept(j):
                return j
        return None

    def negatives(self, i: int, epoch: int) -> tuple[int | None, bool, int]:
        """(X≠M index or None, whether it comes from another painting, X≠I index)."""
        rng = np.random.default_rng((self.seed, int(epoch), int(i)))
        p, e, t = self.painting_code[i], self.emotions[i], self.text_code[i]
        fallback = False
        if self._has_same_painting_negative[i]:
            members = self._members[p]
            ok = members[(self.emotions[members] != e) & (self.text_code[members] != t)]
            wrong = int(ok[rng.integers(len(ok))])
        else:
            fallback = True
            wrong = self._draw(
                rng,
                lambda j: self.painting_code[j] != p and self.emotions[j] != e and self.text_code[j] != t,
            )
        other = self._draw(rng, lambda j: self.painting_code[j] != p and self.text_code[j] != t)
        if other is None:
            raise ValueError("no utterance of another painting differs from the positive's text")
        return wrong, fallback, other

    def _own_sentence(self, j: int) -> dict[str, np.ndarray]:
        """Annotation j's own full sentence, with its own painting's features when cached."""
        sentence = self.builder.build(int(self.emotions[j]), *self._explanation(j))
        if self.features is not None:
            sentence["image_features"] = self.features.get_one(self.painting_ids[j])
        return sentence

    def __getitem__(self, index) -> dict:
        if isinstance(index, (tuple, list)):
            i, epoch = int(index[0]), int(index[1])
        else:
            i, epoch = int(index), self.epoch
        e = int(self.emotions[i])
        positive = self.builder.build(e, *self._explanation(i))
        wrong, fallback, other = self.negatives(i, epoch)
        valid = wrong is not None
        neg_m = self._own_sentence(wrong if valid else other)
        neg_i = self._own_sentence(other)
        item = {
            "index": i,
            "painting_id": self.painting_ids[i],
            "emotion": e,
            "positive": positive,
            "neg_wrong_emotion": neg_m,
            "neg_other_image": neg_i,
            "neg_wrong_emotion_valid": valid,
            "neg_wrong_emotion_fallback": fallback,
            "neg_wrong_emotion_index": -1 if wrong is None else wrong,
            "neg_other_image_index": other,
        }
        if self.features is not None:
            item["image_features"] = self.features.get_one(self.painting_ids[i])
        return item


def _stack(items: Sequence[dict], key: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.stack([it[key] for it in items]), dtype=dtype)


def _sentences(parts: Sequence[dict], with_labels: bool) -> dict[str, torch.Tensor]:
    out = {} if "image_features" not in parts[0] else {
        "image_features": torch.stack([torch.as_tensor(p["image_features"]) for p in parts]).to(torch.float32)
    }
    out |= {
        "input_ids": _stack(parts, "input_ids", torch.long),
        "segment_ids": _stack(parts, "segment_ids", torch.long),
        "attention_mask": _stack(parts, "attention_mask", torch.long),
        "vad": _stack(parts, "vad", torch.float32),
        "prompt_mask": _stack(parts, "prompt_mask", torch.bool),
        "explanation_mask": _stack(parts, "explanation_mask", torch.bool),
    }
    if with_labels:
        out["labels"] = _stack(parts, "labels", torch.long)
    return out


def collate(items: Sequence[dict]) -> dict:
    """Batch of :class:`TrainingExamples` items (the model's input contract):

    ``image_features`` float32 (B,K,d_v); ``input_ids, segment_ids, attention_mask, labels``
    long (B,L); ``vad`` float32 (B,L,3); ``prompt_mask, explanation_mask`` bool (B,L);
    ``emotion`` long (B,); ``painting_id`` list[str]; ``neg_wrong_emotion`` and
    ``neg_other_image``: dicts with ``input_ids, segment_ids, attention_mask, vad,
    prompt_mask, explanation_mask`` and ``image_features`` (the negative annotation's own
    sentence and painting); ``neg_wrong_emotion_valid`` bool (B,).
    """
    batch: dict = {}
    if "image_features" in items[0]:
        batch["image_features"] = torch.stack([it["image_features"] for it in items]).to(torch.float32)
    batch.update(_sentences([it["positive"] for it in items], with_labels=True))
    batch["emotion"] = torch.tensor([it["emotion"] for it in items], dtype=torch.long)
    batch["painting_id"] = [str(it["painting_id"]) for it in items]
    batch["neg_wrong_emotion"] = _sentences([it["neg_wrong_emotion"] for it in items], with_labels=False)
    batch["neg_other_image"] = _sentences([it["neg_other_image"] for it in items], with_labels=False)
    batch["neg_wrong_emotion_valid"] = torch.tensor([it["neg_wrong_emotion_valid"] for it in items], dtype=torch.bool)
    return batch


class EpochSampler(Sampler):
    """Yields ``(index, epoch)``; a new ``default_rng((seed, epoch))`` permutation per pass.

    Each pass uses the current epoch and then advances it; ``set_epoch(k)`` makes the next
    pass epoch ``k`` (resuming). ``skip`` drops the first items of the next pass (resuming
    mid-epoch).
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle = int(n), int(seed), shuffle
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self._skip = int(epoch), int(skip)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng((self.seed, int(epoch))).permutation(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.epoch, self._skip
        self.epoch, self._skip = epoch + 1, 0
        for i in self.order(epoch)[skip:]:
            yield int(i), epoch

    def __len__(self) -> int:
        return self.n


def training_examples(prepared: PreparedData, split: str = "train", seed: int = 0) -> TrainingExamples:
    """The (tokenised once) :class:`TrainingExamples` of a split, cached on ``prepared``."""
    key = (split, int(seed), int(prepared.max_length))
    examples = prepared.examples_cache.get(key)
    if examples is None:
        examples = TrainingExamples(
            prepared.splits[split],
            prepared.features,
            prepared.tokenizer,
            prepared.lexicon,
            max_length=prepared.max_length,
            seed=seed,
        )
        prepared.examples_cache[key] = examples
        if split == "train" and TRUNCATION_NOTE not in prepared.report.notes:
            prepared.report.note(TRUNCATION_NOTE, examples.stats["truncated_sentences"])
    return examples


def make_train_loader(
    prepared: PreparedData,
    batch_size: int,
    seed: int,
    split: str = "train",
    *,
    epoch: int = 0,
    num_workers: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> DataLoader:
    """DataLoader of :func:`collate` batches; shuffle and negatives deterministic per seed.

    The first pass over the loader is epoch ``epoch``, later passes advance it (or pin it
    with ``loader.sampler.set_epoch(k)``). The examples are tokenised once per
    ``prepared`` (cached), so building a loader per epoch is cheap.
    ``loader.dataset.stats`` has the negative-fallback counts.
    """
    examples = training_examples(prepared, split, seed)
    sampler = EpochSampler(len(examples), seed, shuffle=shuffle)
    sampler.set_epoch(epoch)
    return DataLoader(
        examples,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(int(seed)),
        persistent_workers=num_workers > 0,
    )


__all__ = [
    "TRUNCATION_NOTE",
    "EpochSampler",
    "TrainingExamples",
    "collate",
    "make_train_loader",
    "training_examples",
]
