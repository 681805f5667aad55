"""The GPT-2 decoder with cross-attention to the image patch tokens.

``GPT2LMHeadModel`` with ``add_cross_attention=True`` (a cross-attention layer in every
block; the frozen image encoder's patch tokens are the encoder states), built either from a
pretrained checkpoint (hub name or local directory; its token embeddings are resized to the
SEVLM tokenizer, which adds ``<pad>`` and the two segment tokens) or randomly with the
shape of :class:`~sevlm.config.DecoderConfig` (offline, tests, benchmarks).

When the image feature width ``d_v`` differs from ``n_embd`` a linear projection maps the
patch tokens to ``n_embd`` (the paper's ViT-B/16 + distilgpt2 pair has 768 = 768 and uses
the identity).
"""

from __future__ import annotations

import inspect

import sevlm  # noqa: F401  (torchvision shim before transformers)
import torch
from torch import nn

from sevlm.config import DecoderConfig


class SEVLMDecoder(nn.Module):
    """GPT-2 + optional image projection.

    Attributes:
        gpt: the ``GPT2LMHeadModel`` (``gpt.transformer`` the body, ``gpt.lm_head`` the
            language head, tied to the word embeddings).
        image_proj: ``nn.Linear(d_v, n_embd)`` or ``nn.Identity()``.
    """

    def __init__(self, gpt: nn.Module, image_feature_dim: int) -> None:
        super().__init__()
        self.gpt = gpt
        n_embd = int(gpt.config.n_embd)
        self.image_feature_dim = int(image_feature_dim)
        if self.image_feature_dim != n_embd:
            self.image_proj: nn.Module = nn.Linear(self.image_feature_dim, n_embd)
        else:
            self.image_proj = nn.Identity()

    # ------------------------------------------------------------------ properties

    @property
    def config(self):
        return self.gpt.config

    @property
    def n_embd(self) -> int:
        return int(self.gpt.config.n_embd)

    @property
    def n_positions(self) -> int:
        return int(self.gpt.config.n_positions)

    @property
    def wte(self) -> nn.Embedding:
        return self.gpt.transformer.wte

    @property
    def lm_head(self) -> nn.Module:
        return self.gpt.lm_head

    # --------------------------------------------------------------------- compute

    def project_image(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, K, d_v) -> contiguous (B, K, n_embd) encoder states."""
        return self.image_proj(image_features.contiguous()).contiguous()

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.wte(input_ids)

    def position_segment_embeddings(self, segment_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, T, n_embd): what GPT-2 adds to its input embeddings at positions start.. (the
        position embeddings and ``wte(token_type_ids)``: segment ids are token ids)."""
        positions = torch.arange(start, start + segment_ids.shape[1], device=segment_ids.device)
        return self.gpt.transformer.wpe(positions).unsqueeze(0) + self.wte(segment_ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        token_type_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
    ):
        """Run the GPT-2 body; returns ``(last_hidden_state, past_key_values)``.

        ``inputs_embeds`` are the (possibly VAD-fused) word embeddings; GPT-2 adds the
        position embeddings and ``wte(token_type_ids)`` (segment ids are token ids).
        ``encoder_hidden_states`` must already be projected (:meth:`project_image`). With a
        cache, the cross-attention keys/values are computed on the first call and reused.
        """
        body = self.gpt.transformer
        cache = _cache_keyword(body)
        out = body(
            inputs_embeds=inputs_embeds,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            use_cache=use_cache,
            **{cache: past_key_values},
        )
        return out.last_hidden_state, (getattr(out, cache) if use_cache else None)


def build_decoder(
    cfg: DecoderConfig,
    tokenizer,
    image_feature_dim: int,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> SEVLMDecoder:
    """A pretrained (``cfg.name_or_path``) or random (``None``) GPT-2 with cross-attention.

    Pretrained: the checkpoint's own shape is used (``n_layer``/``n_head``/``n_embd`` of
    ``cfg`` are ignored), its dropout is set to ``cfg.dropout``, the cross-attention layers
    are newly initialised (seeded) and the token embeddings are resized to
    ``len(tokenizer)``. Random: the shape of ``cfg``, vocabulary ``len(tokenizer)``.
    ``attn_implementation``: "sdpa" (default) or "eager" (needed for attention weights).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    dropout = float(cfg.dropout)
    common = dict(
        add_cross_attention=True,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.name_or_path is not None:
            gpt = GPT2LMHeadModel.from_pretrained(
                cfg.name_or_path, attn_implementation=attn_implementation, **common
            )
            if gpt.get_input_embeddings().num_embeddings != len(tokenizer):
                gpt.resize_token_embeddings(len(tokenizer))
        else:
            config = GPT2Config(
                vocab_size=len(tokenizer),
                n_positions=cfg.n_positions,
                n_embd=cfg.n_embd,
                n_layer=cfg.n_layer,
                n_head=cfg.n_head,
                tie_word_embeddings=True,
                **common,
            )
            config._attn_implementation = attn_implementation
            gpt = GPT2LMHeadModel(config)
        decoder = SEVLMDecoder(gpt, image_feature_dim)
    return decoder


def _cache_keyword(body) -> str:
    """transformers 5.24 renamed GPT2Model.forward's ``past_key_values`` (argument and output
    field) to ``cache``; the old name warns and goes in 5.40. 5.23 only knows the old one."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"
