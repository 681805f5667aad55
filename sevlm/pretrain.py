"""Pre-train a decoder on text: ``python -m sevlm.pretrain`` (the paper's regime, offline).

The paper fine-tunes a GPT-2 that had read English; the tiny preset's decoder starts from
random weights. This trains the tiny decoder as a text-only language model on sentences
"the emotion is <e> because <X>" (the synthetic corpus of sevlm/data/text_corpus.py, its
own seed, disjoint from every benchmark split), with no image: GPT-2 without
cross-attention, as a pre-trained GPT-2 comes. It writes a folder that ``--decoder DIR``
reads (``config.json`` and ``model.safetensors`` of the GPT-2, the tokenizer with its
special tokens, ``sevlm_pretrain.json``: the settings, the corpus and the validation
perplexity). Fine-tuning adds the cross-attention layers, newly initialised from the
trial's seed, as it does for distilgpt2.

The folder is keyed by what made it: ``<root>/textlm-<layers>x<width>-<hash>``, the hash of
the decoder's shape (``model.decoder``, ``model.max_length``), the ``pretrain`` settings
and the corpus and training code versions; ``<root>`` is next to the feature cache
(``<data.feature_cache_dir>/../pretrained_decoders``), so every trial and node that shares
the cache shares it. It is built once, under a file lock, in a temporary folder renamed
into place; a later call (or a concurrent one, after waiting) reuses it.

A run with ``model.decoder_init=pretrained`` (``--decoder-init pretrained`` on
``sevlm.train`` and the sweeps) calls :func:`resolve_decoder_init`, which builds the folder
when it is missing and reads it as ``model.decoder.name_or_path``.

    python -m sevlm.pretrain                        # the tiny preset's decoder
    python -m sevlm.pretrain --set pretrain.epochs=3 --feature-cache-dir /shared/cache/features
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import sevlm  # noqa: F401  (torchvision shim before transformers)
from sevlm.config import PRESETS, ExperimentConfig, apply_overrides, compose, set_items
from sevlm.data.text_corpus import CORPUS_VERSION, generate_corpus

# Bump when the training below changes what a given set of settings produces.
PRETRAIN_VERSION = 1
MANIFEST = "sevlm_pretrain.json"
FOLDER_PREFIX = "textlm"
PROGRESS_EVERY = 100  # steps between two progress lines
GRAD_CLIP = 1.0

Report = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------- identity


def pretrain_settings(cfg: ExperimentConfig) -> dict:
    """Everything that decides the pre-trained weights (and nothing else)."""
    d = cfg.model.decoder
    return {
        "pretrain_version": PRETRAIN_VERSION,
        "corpus_version": CORPUS_VERSION,
        "decoder": {"n_layer": d.n_layer, "n_head": d.n_head, "n_embd": d.n_embd, "n_positions": d.n_positions,
                    "dropout": d.dropout, "bpe_merges": d.bpe_merges},
        "max_length": cfg.model.max_length,
        "pretrain": dataclasses.asdict(cfg.pretrain),
    }


def pretrained_decoder_key(cfg: ExperimentConfig) -> str:
    """The folder name: ``textlm-<layers>x<width>-<12 hex of the settings' hash>``."""
    settings = pretrain_settings(cfg)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    d = cfg.model.decoder
    return f"{FOLDER_PREFIX}-{d.n_layer}x{d.n_embd}-{digest}"


def pretrained_decoders_root(cfg: ExperimentConfig) -> Path:
    """Next to the feature cache, as the EA classifier (shared by every trial and node)."""
    return Path(cfg.data.feature_cache_dir).parent / "pretrained_decoders"


def pretrained_decoder_dir(cfg: ExperimentConfig) -> Path:
    return pretrained_decoders_root(cfg) / pretrained_decoder_key(cfg)


def _check(cfg: ExperimentConfig) -> None:
    if cfg.model.decoder.name_or_path is not None:
        raise ValueError(
            "sevlm.pretrain trains a decoder without a checkpoint: model.decoder.name_or_path must be "
            f"none (got {cfg.model.decoder.name_or_path!r}; --preset tiny has none)"
        )
    p = cfg.pretrain
    for name in ("epochs", "batch_size", "sentences"):
        if getattr(p, name) < 1:
            raise ValueError(f"pretrain.{name} must be at least 1 (got {getattr(p, name)})")
    if not p.lr > 0:
        raise ValueError(f"pretrain.lr must be positive (got {p.lr})")


# ------------------------------------------------------------------- the folder


def is_complete(folder: Path) -> bool:
    """The manifest is written last: a folder without it is not a finished build."""
    return (folder / MANIFEST).is_file() and (folder / "config.json").is_file()


def ensure_pretrained_decoder(cfg: ExperimentConfig, report: Report = _print) -> Path:
    """The pre-trained decoder's folder for ``cfg``, built under a file lock if missing."""
    from filelock import FileLock

    _check(cfg)
    folder = pretrained_decoder_dir(cfg)
    if is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if is_complete(folder):  # another process built it while this one waited
            return folder
        report(f"pre-training the decoder on text into {folder} (once; later runs reuse it)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            pretrain(cfg, tmp, report=report)
            if folder.exists():  # an incomplete leftover of an interrupted build
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_decoder_init(cfg: ExperimentConfig, report: Report = _print) -> ExperimentConfig:
    """``cfg`` with ``model.decoder_init=pretrained`` turned into the pre-trained decoder's
    folder as ``model.decoder.name_or_path`` (built if missing); otherwise ``cfg`` itself.

    The folder's tokenizer is the decoder's own (``bpe_merges`` is then left to it, as for
    any named decoder). The resolved configuration records which folder was read and
    resolves to itself.
    """
    if cfg.model.decoder_init != "pretrained" or cfg.model.decoder.name_or_path is not None:
        return cfg
    # Absolute: the run's config.json must still find it from another working directory.
    folder = ensure_pretrained_decoder(cfg, report=report).resolve()
    return apply_overrides(cfg, {"model.decoder.name_or_path": str(folder), "model.decoder.bpe_merges": None})


# --------------------------------------------------------------------- training


@dataclass
class PretrainResult:
    folder: Path
    val_perplexity: float
    initial_val_perplexity: float
    train_sentences: int
    val_sentences: int
    val_tokens: int
    steps: int
    seconds: float


def _encode(tokenizer, sentences, max_length: int) -> dict[str, torch.Tensor]:
    rows = [tokenizer.encode_full_sentence(e, x, vad=None, max_length=max_length) for e, x in sentences]
    return {
        "input_ids": torch.tensor([r.input_ids for r in rows], dtype=torch.long),
        "segment_ids": torch.tensor([r.segment_ids for r in rows], dtype=torch.long),
        "attention_mask": torch.tensor([r.attention_mask for r in rows], dtype=torch.long),
        "labels": torch.tensor([r.labels for r in rows], dtype=torch.long),
    }


def _batch(data: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[index] for k, v in data.items()}


def language_loss(gpt, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """The fine-tuning's language loss (the emotion words, explanation and <eos>), text
    only: GPT-2 reads the segment ids as token types, as in SEVLM, with no image."""
    from sevlm.text import IGNORE_INDEX

    hidden = gpt.transformer(input_ids=batch["input_ids"], token_type_ids=batch["segment_ids"],
                             attention_mask=batch["attention_mask"]).last_hidden_state
    logits = gpt.lm_head(hidden[:, :-1]).float()
    labels = batch["labels"][:, 1:]
    total = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                              ignore_index=IGNORE_INDEX, reduction="sum")
    if reduction == "sum":
        return total
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


@torch.no_grad()
def perplexity(gpt, data: dict[str, torch.Tensor], batch_size: int = 256) -> tuple[float, int]:
    """exp(mean negative log-likelihood per scored token), and the number of tokens."""
    from sevlm.text import IGNORE_INDEX

    was_training = gpt.training
    gpt.eval()
    total, tokens = 0.0, 0
    n = data["input_ids"].shape[0]
    for start in range(0, n, batch_size):
        batch = _batch(data, torch.arange(start, min(start + batch_size, n)))
        total += float(language_loss(gpt, batch, reduction="sum"))
        tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    gpt.train(was_training)
    return math.exp(total / max(tokens, 1)), tokens


def build_language_model(cfg: ExperimentConfig, tokenizer):
    """A GPT-2 of the decoder's shape without cross-attention (as pre-trained GPT-2 comes)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    d = cfg.model.decoder
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=d.n_positions, n_embd=d.n_embd, n_layer=d.n_layer,
        n_head=d.n_head, resid_pdrop=d.dropout, embd_pdrop=d.dropout, attn_pdrop=d.dropout,
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
        tie_word_embeddings=True, add_cross_attention=False,
    )
    config._attn_implementation = "sdpa"
    return GPT2LMHeadModel(config)


def pretrain(cfg: ExperimentConfig, out_dir: str | os.PathLike, report: Report = _print) -> PretrainResult:
    """Train the language model of ``cfg`` and save it with its tokenizer into ``out_dir``.

    Seeded by ``pretrain.seed`` (weights, batch order) inside its own RNG scope: the
    caller's random state is left as it was.
    """
    from sevlm.text import SEVLMTokenizer

    from sevlm.training.allocator import keep_freed_memory

    _check(cfg)
    keep_freed_memory()  # the step's logits are reused, not mapped again page by page (as in training)
    p, d = cfg.pretrain, cfg.model.decoder
    out = Path(out_dir)
    start = time.perf_counter()
    corpus = generate_corpus(p.sentences, p.corpus_seed, p.val_fraction)
    tokenizer = SEVLMTokenizer.for_decoder(None, d.bpe_merges)
    train = _encode(tokenizer, corpus.train, cfg.model.max_length)
    val = _encode(tokenizer, corpus.val, cfg.model.max_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)
        gpt = build_language_model(cfg, tokenizer)
        initial_ppl, val_tokens = perplexity(gpt, val)
        report(f"pretrain: {len(corpus.train)} training and {len(corpus.val)} held-out sentences "
               f"(corpus seed {p.corpus_seed}), a {d.n_layer}-layer {d.n_embd}-wide GPT-2 of "
               f"{sum(t.numel() for t in gpt.parameters()) / 1e6:.2f} M parameters; "
               f"validation perplexity at initialisation {initial_ppl:.1f}")
        optimizer = torch.optim.AdamW(gpt.parameters(), lr=p.lr, weight_decay=0.0, foreach=True)
        n = train["input_ids"].shape[0]
        per_epoch = (n + p.batch_size - 1) // p.batch_size
        total = p.epochs * per_epoch

        def factor(step: int) -> float:  # linear warm-up, then linear decay to 0
            if p.warmup_steps and step < p.warmup_steps:
                return (step + 1) / p.warmup_steps
            return max(0.0, (total - step) / max(1, total - p.warmup_steps))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        generator = torch.Generator().manual_seed(p.seed)
        gpt.train()
        step, running, count = 0, 0.0, 0
        for epoch in range(p.epochs):
            order = torch.randperm(n, generator=generator)
            for b in range(per_epoch):
                loss = language_loss(gpt, _batch(train, order[b * p.batch_size:(b + 1) * p.batch_size]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(gpt.parameters(), GRAD_CLIP)
                optimizer.step()
                scheduler.step()
                step += 1
                running, count = running + float(loss.detach()), count + 1
                if step % PROGRESS_EVERY == 0 or step == total:
                    report(f"pretrain: epoch {epoch + 1}/{p.epochs} step {step}/{total} "
                           f"train loss {running / count:.3f} ({time.perf_counter() - start:.0f} s)")
                    running, count = 0.0, 0
        ppl, _ = perplexity(gpt, val)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    gpt.save_pretrained(out)
    tokenizer.hf.save_pretrained(out)
    result = PretrainResult(out, ppl, initial_ppl, len(corpus.train), len(corpus.val), val_tokens, step, seconds)
    manifest = {
        "key": pretrained_decoder_key(cfg),
        "settings": pretrain_settings(cfg),
        "vocabulary": len(tokenizer),
        "val_perplexity": ppl,
        "initial_val_perplexity": initial_ppl,
        "train_sentences": len(corpus.train),
        "val_sentences": len(corpus.val),
        "val_tokens": val_tokens,
        "steps": step,
        "seconds": round(seconds, 1),
        "torch": torch.__version__,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))  # last: marks it complete
    report(f"pretrain: validation perplexity {ppl:.3f} on {len(corpus.val)} held-out sentences "
           f"({val_tokens} tokens; {initial_ppl:.0f} at initialisation), {step} steps in {seconds:.0f} s")
    return result


def read_manifest(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))


# -------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sevlm.pretrain",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="the decoder's shape comes from the preset (default tiny; the paper "
                        "preset names distilgpt2, which needs no pre-training here)")
    p.add_argument("--feature-cache-dir",
                   help="the feature cache the runs use: the decoder goes to <its parent>/pretrained_decoders")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration field, e.g. --set pretrain.epochs=3")
    p.add_argument("--force", action="store_true", help="build again even if the folder exists")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {"data.feature_cache_dir": args.feature_cache_dir} if args.feature_cache_dir else {}
    try:
        cfg = compose(args.preset, flags, set_items(args.set))
        _check(cfg)
    except ValueError as exc:
        parser.error(str(exc))
    folder = pretrained_decoder_dir(cfg)
    if args.force and folder.exists():
        shutil.rmtree(folder)
    existed = is_complete(folder)
    folder = ensure_pretrained_decoder(cfg)
    manifest = read_manifest(folder)
    if existed:
        print(f"pretrain: {folder} already built (validation perplexity {manifest['val_perplexity']:.3f}, "
              f"{manifest['seconds']:.0f} s); --force builds it again")
    print(f"decoder folder: {folder}")
    print("use it with: python -m sevlm.train --decoder-init pretrained"
          + (f" --feature-cache-dir {args.feature_cache_dir}" if args.feature_cache_dir else "")
          + f"  (or --decoder {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
