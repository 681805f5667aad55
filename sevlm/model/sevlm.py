"""SEVLM: CLIP patch tokens -> GPT-2 (cross-attention) + VAD emotion modelling, VAD head
and contrastive head (arXiv 2403.11150, section 4).

Batch contract of :meth:`SEVLM.forward` (produced by the data collate)::

    image_features     float (B, K, d_v)   frozen image-encoder patch tokens
    input_ids          long  (B, L)        <bos> M X <eos> <pad>...
    segment_ids        long  (B, L)        segment token ids (embedded by GPT-2's wte)
    attention_mask     long/bool (B, L)    1 = real token, 0 = padding (right padding)
    labels             long  (B, L)        NOT shifted: logits at t predict labels[t+1];
                                           -100 = ignored
    vad                float (B, L, 3)     lexicon VAD of each explanation token's word
    prompt_mask        bool  (B, L)        <bos> + "the emotion is <emotion>"
    explanation_mask   bool  (B, L)        " because ..." + <eos>
    emotion            long  (B,)          emotion index (not used by the model itself)
    neg_wrong_emotion  dict                negative X_{!=M}: input_ids, segment_ids,
    neg_other_image    dict                negative X_{!=I}: attention_mask, vad,
                                           prompt_mask, explanation_mask (B, L) (vad
                                           (B, L, 3)) and image_features (B, K, d_v): the
                                           negative's own full sentence (its own emotion
                                           prompt and explanation) and its own painting
    neg_wrong_emotion_valid  bool (B,), optional: False = that row's X_{!=M} negative is
                                           left out of its softmax (masked with -inf), e.g.
                                           a painting whose annotations all share one
                                           emotion. The sentence must still be present.

Only the negatives that are enabled are read (a disabled negative may be absent). The
positive and the enabled negatives go through one decoder call (concatenated along the
batch); only the positive contributes the language and emotion losses.

Contrastive features (paper eq. 6-7): a triple scores S(I, M, X) = MLP(mean f_I ⊕ mean f'_M
⊕ mean f'_X) with the anchor's image and prompt features and the explanation's features
*as the decoder reads that explanation in its own sentence* (its own painting and emotion
prompt), as the reference code does by pairing a row with other rows' explanation
features. Reading a negative explanation after the anchor's image and emotion instead
(this project's first version) asks the decoder itself to represent contradictory
sentences it never has to generate, and its gradient on the shared decoder outweighed the
language loss's several times over (``python -m sevlm.training.loss_diagnostics``).

Losses: ``L = L_language + L_emotion + alpha * L_contrastive`` over the enabled terms.

- Language: cross-entropy of logits[t] against labels[t+1].
- Emotion (VAD head): the hidden state at t predicts the VAD vector of token t+1 (as in the
  reference code: the VAD of token t is already an input at t); MSE averaged over the
  explanation tokens (t+1 in ``explanation_mask``, which includes " because" and <eos>;
  out-of-lexicon words have the neutral target (0, 0, 0)).
- Contrastive: softmax cross-entropy of S(I, M, X) against the enabled negatives.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import sevlm  # noqa: F401  (torchvision shim before transformers)
import torch
import torch.nn.functional as F
from torch import nn

from sevlm.config import ModelConfig, validate
from sevlm.emotions import EMOTIONS
from sevlm.model.decoder import SEVLMDecoder, build_decoder
from sevlm.model.emotion import VADEmotionModel
from sevlm.model.generation import decode
from sevlm.model.heads import (
    ContrastiveHead,
    VADHead,
    contrastive_loss,
    emotion_loss,
    explanation_span,
    masked_mean,
)
from sevlm.text import IGNORE_INDEX, GeneratedTokenFeatures

NEGATIVES = ("neg_wrong_emotion", "neg_other_image")
SEQUENCE_KEYS = ("input_ids", "segment_ids", "attention_mask", "vad", "prompt_mask", "explanation_mask")
VadLookup = Callable[[str], tuple[float, float, float]]

# Offsets added to the seed for each component, so that switching one module off does not
# change the initial weights of the others (alpha=0 and use_contrastive=False then start
# from identical decoders).
_SEED_DECODER, _SEED_VAD, _SEED_VAD_HEAD, _SEED_CONTRASTIVE = 0, 1, 2, 3


@dataclass
class SEVLMOutput:
    loss: torch.Tensor
    loss_language: torch.Tensor
    loss_emotion: torch.Tensor | None
    loss_contrastive: torch.Tensor | None
    logits: torch.Tensor  # (B, L, V) of the positive sentences
    contrastive_scores: torch.Tensor | None = None  # (B, 1 + n_neg): positive first


def _seeded(seed: int, fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


class SEVLM(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        tokenizer,
        decoder: SEVLMDecoder,
        vad_model: VADEmotionModel | None,
        vad_head: VADHead | None,
        contrastive_head: ContrastiveHead | None,
        vad_lexicon: VadLookup | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.vad_model = vad_model
        self.vad_head = vad_head
        self.contrastive_head = contrastive_head
        self.alpha = float(cfg.alpha)
        self.negatives: tuple[str, ...] = tuple(
            name
            for name, on in zip(NEGATIVES, (cfg.neg_wrong_emotion, cfg.neg_other_image))
            if on and contrastive_head is not None
        )
        self.vad_lexicon = vad_lexicon

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        tokenizer,
        image_feature_dim: int,
        seed: int = 0,
        vad_lexicon: VadLookup | None = None,
        attn_implementation: str = "sdpa",
    ) -> SEVLM:
        """Build the decoder and the modules the switches of ``cfg`` turn on.

        Modules that are off do not exist (the baseline has only the decoder). Each
        component is initialised from its own seed derived from ``seed``.
        """
        validate(cfg)
        decoder = build_decoder(
            cfg.decoder, tokenizer, image_feature_dim, seed=seed + _SEED_DECODER,
            attn_implementation=attn_implementation,
        )
        d = decoder.n_embd
        vad_model = None
        if cfg.use_vad_features:
            vad_model = _seeded(seed + _SEED_VAD, lambda: VADEmotionModel(
                d,
                num_layers=cfg.emotion_encoder_layers,
                num_heads=cfg.emotion_encoder_heads,
                dim_feedforward=cfg.emotion_encoder_ff,
                dropout=cfg.decoder.dropout,
            ))
        vad_head = _seeded(seed + _SEED_VAD_HEAD, lambda: VADHead(d)) if cfg.use_vad_head else None
        contrastive_head = None
        if cfg.use_contrastive:
            contrastive_head = _seeded(
                seed + _SEED_CONTRASTIVE, lambda: ContrastiveHead(
                    d, d, cfg.contrastive_hidden, cfg.contrastive_head_layers, cfg.contrastive_head_init)
            )
        return cls(cfg, tokenizer, decoder, vad_model, vad_head, contrastive_head, vad_lexicon)

    def set_vad_lexicon(self, vad_lexicon: VadLookup | None) -> None:
        """The word_key -> (v, a, d) lookup used for generated tokens."""
        self.vad_lexicon = vad_lexicon

    # -------------------------------------------------------------- optimisation

    def parameter_groups(self, lr_decoder: float, lr_vad: float, weight_decay: float = 0.0) -> list[dict]:
        """AdamW groups: decoder + language/VAD/contrastive heads at ``lr_decoder``; VAD
        emotion modelling (emotion encoder + fusion) at ``lr_vad``. Empty groups are left
        out; every trainable parameter is in exactly one group."""
        vad_ids = set()
        vad_params = []
        if self.vad_model is not None:
            vad_params = [p for p in self.vad_model.parameters() if p.requires_grad]
            vad_ids = {id(p) for p in vad_params}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in vad_ids]
        groups = []
        if main:
            groups.append({"name": "decoder_and_heads", "params": main, "lr": lr_decoder,
                           "weight_decay": weight_decay})
        if vad_params:
            groups.append({"name": "vad_emotion_modelling", "params": vad_params, "lr": lr_vad,
                           "weight_decay": weight_decay})
        return groups

    # ------------------------------------------------------------------ forward

    def embed(self, input_ids: torch.Tensor, vad: torch.Tensor | None, explanation_mask: torch.Tensor | None,
              segment_ids: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Decoder input embeddings, VAD-fused on explanation positions when VAD features are
        on (``model.fusion_input``). ``last_only``: ``input_ids`` (B, 1) is the last position
        of the (B, L) ``vad`` / ``explanation_mask`` / ``segment_ids`` (cached generation)."""
        embeds = self.decoder.embed_tokens(input_ids)
        if self.vad_model is None:
            return embeds
        vad = vad.to(embeds.dtype)
        if self.cfg.fusion_input == "word":
            return self.vad_model(embeds, vad, explanation_mask, last_only=last_only)
        # "paper" (eq. 2): fuse f^X = word + position + segment embeddings. GPT-2 adds the
        # last two to its input itself, so they are taken off the fused positions again.
        start = explanation_mask.shape[1] - input_ids.shape[1]
        extra = self.decoder.position_segment_embeddings(segment_ids[:, start:], start).to(embeds.dtype)
        fused = self.vad_model(embeds + extra, vad, explanation_mask, last_only=last_only)
        return torch.where(explanation_mask[:, start:].bool().unsqueeze(-1), fused - extra, embeds)

    def sequence_hidden_states(self, seq: dict, encoder_states: torch.Tensor) -> torch.Tensor:
        """Last hidden states (B, L, d) of one batch of sentences.

        ``encoder_states``: projected image features (B, K, d) (see
        ``self.decoder.project_image``).
        """
        embeds = self.embed(seq["input_ids"], seq.get("vad"), seq.get("explanation_mask"), seq["segment_ids"])
        hidden, _ = self.decoder(
            embeds,
            token_type_ids=seq["segment_ids"],
            encoder_hidden_states=encoder_states,
            attention_mask=seq["attention_mask"],
            use_cache=False,
        )
        return hidden

    def forward(self, batch: dict) -> SEVLMOutput:
        pos = {k: batch[k] for k in SEQUENCE_KEYS}
        bsz = pos["input_ids"].shape[0]
        seqs = [pos]
        images = [batch["image_features"]]
        for name in self.negatives:
            if name not in batch:
                raise KeyError(f"batch has no {name!r}: the model's contrastive loss needs it")
            if "image_features" not in batch[name]:
                raise KeyError(f"batch[{name!r}] has no 'image_features' (the negative's own painting)")
            seqs.append(batch[name])
            images.append(batch[name]["image_features"])
        n = len(seqs)
        merged = _concat_sequences(seqs, self.tokenizer.pad_id, self.tokenizer.explanation_segment_id)

        enc_all = self.decoder.project_image(torch.cat(images, dim=0) if n > 1 else images[0])
        enc = enc_all[:bsz]
        hidden = self.sequence_hidden_states(merged, enc_all)
        length = pos["input_ids"].shape[1]
        h_pos = hidden[:bsz, :length]

        logits = self.decoder.lm_head(h_pos)
        labels = batch["labels"]
        loss_language = _language_loss(logits, labels)
        total = loss_language

        loss_emotion = None
        if self.vad_head is not None:
            pred = self.vad_head(h_pos[:, :-1])
            loss_emotion = emotion_loss(pred, pos["vad"][:, 1:], pos["explanation_mask"][:, 1:])
            total = total + loss_emotion

        loss_contrastive = None
        scores = None
        if self.contrastive_head is not None:
            image_mean = enc.mean(dim=1)
            prompt_mean = masked_mean(h_pos, pos["prompt_mask"])
            explanation_means = masked_mean(hidden, explanation_span(
                merged["explanation_mask"], self.cfg.contrastive_mean_includes_padding))
            all_scores = self.contrastive_head(
                image_mean.repeat(n, 1), prompt_mean.repeat(n, 1), explanation_means
            ).view(n, bsz)
            valid = [
                batch.get("neg_wrong_emotion_valid") if name == "neg_wrong_emotion" else None
                for name in self.negatives
            ]
            loss_contrastive = contrastive_loss(all_scores[0], list(all_scores[1:]), valid)
            scores = all_scores.t()
            total = total + self.alpha * loss_contrastive

        return SEVLMOutput(
            loss=total,
            loss_language=loss_language,
            loss_emotion=loss_emotion,
            loss_contrastive=loss_contrastive,
            logits=logits,
            contrastive_scores=scores,
        )

    # ---------------------------------------------------------------- generation

    @torch.no_grad()
    def emotion_log_likelihoods(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, 9) log-likelihood of "<emotion> because" after "<bos> the emotion is".

        The closed-set emotion prediction (argmax over ArtEmis' nine emotions, in
        :data:`sevlm.emotions.EMOTIONS` order) has none of the sampling noise of reading
        the emotion off a nucleus-sampled generation. The connective ends the emotion
        phrase, so a one-token emotion is not favoured over "something else". Tokens are
        fed as generation feeds them (segments, VAD) and scored under generation's
        distribution (the never-generated special tokens excluded).
        """
        tok = self.tokenizer
        prompt_ids, prompt_segs = tok.inference_prompt()
        lexicon = self.vad_lexicon if self.vad_model is not None else None
        continuations = [[*tok.emotion_ids[e], tok.connective_id] for e in EMOTIONS]
        width = len(prompt_ids) + max(len(c) for c in continuations)
        n_emo, n_prompt = len(continuations), len(prompt_ids)
        ids = torch.full((n_emo, width), tok.pad_id, dtype=torch.long)
        segs = torch.full((n_emo, width), tok.explanation_segment_id, dtype=torch.long)
        vad = torch.zeros(n_emo, width, 3)
        expl = torch.zeros(n_emo, width, dtype=torch.bool)
        scored = torch.zeros(n_emo, width, dtype=torch.bool)  # positions whose token is scored
        for e, cont in enumerate(continuations):
            features = GeneratedTokenFeatures(tok, lexicon, 1, prompt_segs[-1])
            steps = [features.step([t]) for t in cont]
            end = n_prompt + len(cont)
            ids[e, :end] = torch.tensor(prompt_ids + cont)
            segs[e, :end] = torch.tensor(prompt_segs + [s[0] for s, _, _ in steps])
            vad[e, n_prompt:end] = torch.tensor([v[0] for _, _, v in steps])
            expl[e, n_prompt:end] = torch.tensor([x[0] for _, x, _ in steps])
            scored[e, n_prompt:end] = True
        attention = ids != tok.pad_id
        bsz, device = image_features.shape[0], image_features.device

        def per_image(x: torch.Tensor) -> torch.Tensor:  # (E, ...) -> (B*E, ...)
            return x.to(device).repeat(bsz, *([1] * (x.dim() - 1)))

        was_training = self.training
        self.eval()
        try:
            enc = self.decoder.project_image(image_features).repeat_interleave(n_emo, dim=0)
            embeds = self.embed(per_image(ids), per_image(vad), per_image(expl), per_image(segs))
            hidden, _ = self.decoder(embeds, token_type_ids=per_image(segs), encoder_hidden_states=enc,
                                     attention_mask=per_image(attention), use_cache=False)
            logits = self.decoder.lm_head(hidden[:, :-1]).float()
        finally:
            self.train(was_training)
        logits[..., self.never_generated_ids()] = float("-inf")
        logp = torch.log_softmax(logits, dim=-1).gather(-1, per_image(ids)[:, 1:, None]).squeeze(-1)
        logp = torch.where(per_image(scored)[:, 1:], logp, torch.zeros((), device=device))
        return logp.sum(dim=1).view(bsz, n_emo)

    def never_generated_ids(self) -> list[int]:
        tok = self.tokenizer
        return sorted({tok.pad_id, tok.prompt_segment_id, tok.explanation_segment_id})

    @torch.no_grad()
    def generate(
        self,
        image_features: torch.Tensor,
        *,
        max_new_tokens: int,
        decoding: str = "nucleus",
        top_p: float = 0.9,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        min_new_tokens: int = 0,
    ) -> list[list[int]]:
        """Generate "<emotion> because <explanation>" after "<bos> the emotion is".

        Returns, per image, the generated ids without the prompt, cut before ``<eos>``.

        - ``decoding``: "nucleus" (top-p sampling over the smallest set of tokens whose
          probability reaches ``top_p``, seeded by ``generator``) or "greedy".
        - ``use_cache``: KV cache (transformers' ``EncoderDecoderCache``; the image
          cross-attention keys/values are computed once). ``False`` recomputes the whole
          prefix every step (benchmark / equivalence tests).
        - ``min_new_tokens``: ``<eos>`` is forbidden before that many tokens.
        - The tokens ``<pad>``, ``<emotion>``, ``<explanation>`` are never generated.
        - Segments: a fed token gets ``tokenizer.segment_after(token, current_segment)``,
          so the connective " because" and everything after it are in the explanation
          segment, as in training.
        - VAD features of generated tokens (VAD emotion modelling only): a token gets the
          lexicon VAD of its word *prefix* decoded so far, the rule training uses
          (:class:`sevlm.text.GeneratedTokenFeatures`). Prompt tokens and special tokens
          get (0, 0, 0). The small d_model=3 emotion encoder is
          recomputed over the VAD sequence every step (cheap); the GPT-2 prefix is not.
        """
        if decoding not in ("nucleus", "greedy"):
            raise ValueError(f"decoding must be 'nucleus' or 'greedy', got {decoding!r}")
        if decoding == "nucleus" and not (0.0 < top_p <= 1.0):
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        tok = self.tokenizer
        prompt_ids, prompt_segs = tok.inference_prompt()
        if len(prompt_ids) + max_new_tokens > self.decoder.n_positions:
            raise ValueError(
                f"prompt ({len(prompt_ids)}) + max_new_tokens ({max_new_tokens}) exceeds the "
                f"decoder's n_positions ({self.decoder.n_positions})"
            )
        use_vad = self.vad_model is not None
        if use_vad and self.vad_lexicon is None:
            warnings.warn(
                "SEVLM.generate: the model uses VAD features but has no VAD lexicon "
                "(from_config(vad_lexicon=...) / set_vad_lexicon): generated tokens get "
                "neutral (0, 0, 0) VAD vectors",
                stacklevel=2,
            )
        was_training = self.training
        self.eval()
        try:
            return decode(
                self, image_features, prompt_ids, prompt_segs, max_new_tokens=max_new_tokens, decoding=decoding,
                top_p=top_p, temperature=temperature, generator=generator, use_cache=use_cache,
                min_new_tokens=min_new_tokens,
            )
        finally:
            self.train(was_training)

# ------------------------------------------------------------------------ helpers


def _language_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits[:, t] against labels[:, t+1] (mean over non-ignored)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    count = (shift_labels != IGNORE_INDEX).sum().clamp(min=1)
    return total / count


def _concat_sequences(seqs: list[dict], pad_id: int, pad_segment: int) -> dict:
    """Concatenate sentence dicts along the batch, right-padding to the longest L."""
    if len(seqs) == 1:
        return dict(seqs[0])
    length = max(s["input_ids"].shape[1] for s in seqs)
    fill = {"input_ids": pad_id, "segment_ids": pad_segment}
    out = {}
    for key in SEQUENCE_KEYS:
        parts = []
        for s in seqs:
            x = s[key]
            if key in ("prompt_mask", "explanation_mask"):
                x = x.bool()
            missing = length - x.shape[1]
            if missing:
                shape = (x.shape[0], missing, *x.shape[2:])
                x = torch.cat([x, torch.full(shape, fill.get(key, 0), dtype=x.dtype, device=x.device)], 1)
            parts.append(x)
        dtype = parts[0].dtype
        out[key] = torch.cat([p.to(dtype) for p in parts], dim=0)
    return out
