"""From a configuration to training batches and evaluation paintings.

:func:`prepare_data` is the one entry point: it generates the synthetic set if asked, loads
and validates the CSV(s), splits by painting, finds the images, ensures the frozen feature
cache and returns :class:`PreparedData`. Paths come from the configuration
(``data.artemis_csv``, ``data.contrastive_csv``, ``data.image_dir``,
``data.synthetic_dir``, ``data.feature_cache_dir``), never from code.

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
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sevlm.data.artemis import (
    REST,
    SPLITS,
    ArtEmisFormatError,
    LoadReport,
    anchor_ids,
    dominant_emotions,
    load_artemis,
    resolve_image_paths,
    split_paintings,
)
from sevlm.data.feature_cache import FeatureCache
from sevlm.data.synthetic import dataset_name, generate_synthetic_artemis
from sevlm.emotions import EMOTION_TO_INDEX, EMOTIONS
from sevlm.text import CONNECTIVE, IGNORE_INDEX, normalize_whitespace, tokenizer_cache_key

log = logging.getLogger(__name__)

DATA_VERSION = "sevlm-data-2"  # 2: word-prefix VAD of BPE pieces
ANNOTATION_COLUMNS = ["painting_id", "art_style", "painting", "emotion", "utterance"]
SENTENCE_KEYS = ("input_ids", "segment_ids", "attention_mask", "vad", "prompt_mask", "explanation_mask")


# ----------------------------------------------------------------------- containers


@dataclass
class SplitData:
    """One split: its annotations, paintings, references and dominant emotions."""

    name: str
    annotations: pd.DataFrame  # painting_id, art_style, painting, emotion, utterance (+ source, row)
    painting_ids: list[str]  # sorted
    references: dict[str, list[str]]  # painting_id -> its utterances
    dominant: dict[str, str | None]  # painting_id -> sevlm.emotions.dominant_emotion(votes)
    image_keys: list[str]  # feature-cache key of each painting (aligned with painting_ids)

    @classmethod
    def from_annotations(cls, name: str, annotations: pd.DataFrame) -> SplitData:
        annotations = annotations.sort_values(["painting_id", "source", "row"], kind="stable").reset_index(drop=True)
        painting_ids = sorted(annotations["painting_id"].unique().tolist())
        references = {pid: list(group) for pid, group in annotations.groupby("painting_id", sort=True)["utterance"]}
        return cls(
            name=name,
            annotations=annotations,
            painting_ids=painting_ids,
            references=references,
            dominant=dominant_emotions(annotations),
            image_keys=list(painting_ids),
        )

    def __len__(self) -> int:
        return len(self.annotations)


@dataclass
class PreparedData:
    splits: dict[str, SplitData]  # "train", "val", "test"
    fingerprint: str
    report: LoadReport
    features: FeatureCache
    image_paths: dict[str, Path]  # painting_id -> image file
    tokenizer: object = None
    lexicon: object = None
    max_length: int = 30
    rest: SplitData | None = None  # paintings with repetition > max_repetition (unused)
    sources: dict[str, str] = field(default_factory=dict)  # "csv", "contrastive_csv", "image_dir"
    examples_cache: dict = field(default_factory=dict, repr=False)  # see training_examples()

    def __getitem__(self, split: str) -> SplitData:
        return self.splits[split]


# ------------------------------------------------------------------- preparation


def _resolve_sources(cfg) -> tuple[Path, Path | None, Path]:
    data = cfg.data
    if data.dataset == "synthetic":
        root = Path(data.synthetic_dir) / dataset_name(data.synthetic_paintings, data.synthetic_annotators, data.synthetic_seed)
        paths = generate_synthetic_artemis(
            root, n_paintings=data.synthetic_paintings, annotators=data.synthetic_annotators, seed=data.synthetic_seed
        )
        return paths.csv, None, paths.image_dir
    if data.dataset not in ("artemis_v1", "artemis_v2"):
        raise ValueError(f"unknown data.dataset {data.dataset!r}; use synthetic, artemis_v1 or artemis_v2")
    missing = [k for k in ("artemis_csv", "image_dir") if not getattr(data, k)]
    if data.dataset == "artemis_v2" and not data.contrastive_csv:
        missing.append("contrastive_csv")
    if missing:
        raise ValueError(
            f"data.dataset={data.dataset!r} needs the paths {['data.' + m for m in missing]} "
            "(configuration keys or the matching command-line flags)"
        )
    contrastive = Path(data.contrastive_csv) if data.dataset == "artemis_v2" else None
    return Path(data.artemis_csv), contrastive, Path(data.image_dir)


def prepare_data(
    cfg,
    tokenizer,
    lexicon,
    image_encoder,
    *,
    progress: bool = False,
    feature_batch_size: int = 64,
    log_report: bool = True,
) -> PreparedData:
    """Load (or generate), validate, split, cache image features; see the module doc."""
    data = cfg.data
    csv_path, contrastive_path, image_dir = _resolve_sources(cfg)
    frame, report = load_artemis(
        csv_path,
        contrastive_path,
        min_tokens=data.min_tokens,
        max_tokens=data.max_tokens,
        on_unknown_emotion=data.on_unknown_emotion,
    )
    split = split_paintings(
        frame,
        seed=data.split_seed,
        fractions=tuple(data.split_fractions),
        max_repetition=data.max_repetition,
        anchors=anchor_ids(frame),
    )
    frame["split"] = frame["painting_id"].map(split)
    used = frame[frame["split"] != REST]

    found, missing = resolve_image_paths(used, image_dir)
    if not found:
        raise FileNotFoundError(
            f"none of the {len(missing)} images was found under {image_dir} "
            f"(expected <image_dir>/<art_style>/<painting>.jpg, e.g. {next(iter(missing.values()))})"
        )
    report.skip("missing_image", len(missing), [f"{p} (painting {pid})" for pid, p in missing.items()])

    features = FeatureCache.ensure(
        image_encoder,
        found,
        data.feature_cache_dir,
        batch_size=feature_batch_size,
        progress=progress,
        num_workers=data.num_workers,
    )
    report.note("images_encoded_now", features.images_encoded)
    report.skip("corrupt_image", len(features.failed), [f"{reason} (painting {pid})" for pid, reason in features.failed.items()])
    keep = frame["painting_id"].isin(features.index)
    dropped = (frame["split"] != REST) & ~keep
    if dropped.any():
        report.note("annotations_of_paintings_without_image", int(dropped.sum()))

    splits: dict[str, SplitData] = {}
    for name in SPLITS:
        part = frame[(frame["split"] == name) & keep]
        if part.empty:
            raise ArtEmisFormatError(f"{csv_path}: the {name} split is empty:\n{report.summary()}")
        splits[name] = SplitData.from_annotations(name, part[[*ANNOTATION_COLUMNS, "source", "row"]])
        report.split_paintings[name] = len(splits[name].painting_ids)
        report.split_annotations[name] = len(splits[name].annotations)
    rest_part = frame[frame["split"] == REST]
    rest = SplitData.from_annotations(REST, rest_part[[*ANNOTATION_COLUMNS, "source", "row"]]) if len(rest_part) else None
    report.split_paintings[REST] = 0 if rest is None else len(rest.painting_ids)
    report.split_annotations[REST] = len(rest_part)

    train = splits["train"]
    unanimous, fallback_items = _unanimity(train.annotations)
    report.note("train_paintings_unanimous", unanimous)
    report.note("train_items_wrong_emotion_negative_from_other_painting", fallback_items)
    report.note(
        "train_paintings_without_dominant_emotion", sum(v is None for v in train.dominant.values())
    )

    fingerprint = data_fingerprint(splits, tokenizer, lexicon, cfg, features)
    if log_report:
        report.log(log)
    return PreparedData(
        splits=splits,
        fingerprint=fingerprint,
        report=report,
        features=features,
        image_paths={pid: p for pid, p in found.items() if pid in features.index},
        tokenizer=tokenizer,
        lexicon=lexicon,
        max_length=cfg.model.max_length,
        rest=rest,
        sources={
            "csv": str(csv_path),
            "contrastive_csv": "" if contrastive_path is None else str(contrastive_path),
            "image_dir": str(image_dir),
        },
    )


def _unanimity(annotations: pd.DataFrame) -> tuple[int, int]:
    """(paintings whose annotations all share one emotion, their annotations)."""
    n_emotions = annotations.groupby("painting_id")["emotion"].nunique()
    unanimous = n_emotions[n_emotions == 1].index
    return len(unanimous), int(annotations["painting_id"].isin(unanimous).sum())


def data_fingerprint(splits: dict[str, SplitData], tokenizer, lexicon, cfg, features: FeatureCache | None) -> str:
    """Hash of the processed annotations of every split, the tokenizer, the lexicon, the
    sentence length and the feature cache (encoder + image set): identical inputs give an
    identical fingerprint."""
    h = hashlib.sha256(DATA_VERSION.encode())
    for name in sorted(splits):
        ann = splits[name].annotations[["painting_id", "emotion", "utterance"]]
        h.update(f"|split={name}|{len(ann)}|".encode())
        h.update(pd.util.hash_pandas_object(ann, index=False).to_numpy().tobytes())
    h.update(f"|tokenizer={tokenizer_cache_key(cfg.model.decoder.name_or_path, cfg.model.decoder.bpe_merges)}:{len(tokenizer)}".encode())
    h.update(f"|lexicon={lexicon.fingerprint()}|max_length={cfg.model.max_length}".encode())
    if features is not None:
        h.update(f"|features={features.directory.parent.name}/{features.directory.name}".encode())
    return h.hexdigest()[:16]


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


# ----------------------------------------------------------------- evaluation


def select_paintings(painting_ids: Sequence[str], max_paintings: int = 0) -> list[str]:
    """All paintings, or a fixed subset (``default_rng(0)``, the same for every trial)."""
    ids = sorted(painting_ids)
    if not max_paintings or max_paintings >= len(ids):
        return ids
    picks = np.random.default_rng(0).permutation(len(ids))[:max_paintings]
    return [ids[i] for i in sorted(picks.tolist())]


class EvalPaintings:
    """Iterable of ``(painting_ids, image_features (B,K,d_v) float32)``, one entry per painting."""

    def __init__(self, features: FeatureCache, painting_ids: Sequence[str], batch_size: int) -> None:
        self.features = features
        self.painting_ids = list(painting_ids)
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return (len(self.painting_ids) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[list[str], torch.Tensor]]:
        for start in range(0, len(self.painting_ids), self.batch_size):
            ids = self.painting_ids[start : start + self.batch_size]
            yield ids, self.features.get(ids)


def eval_batches(prepared: PreparedData, split: str, batch_size: int, max_paintings: int = 0) -> EvalPaintings:
    return EvalPaintings(
        prepared.features, select_paintings(prepared.splits[split].painting_ids, max_paintings), batch_size
    )


__all__ = [
    "EpochSampler",
    "EvalPaintings",
    "PreparedData",
    "SplitData",
    "TrainingExamples",
    "collate",
    "data_fingerprint",
    "eval_batches",
    "make_train_loader",
    "prepare_data",
    "select_paintings",
    "training_examples",
]

