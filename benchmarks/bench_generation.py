"""Generation with the KV cache vs full-prefix recomputation, nucleus sampling, and model sizes.

A distilgpt2-shaped SEVLM (6 blocks, 12 heads, d_s=768, random weights: there is no model
hub offline) with all SEVLM components on, random image features (16, 196, 768), greedy
decoding of exactly 25 new tokens (``min_new_tokens`` forbids <eos> before that), on CPU.
Also prints the parameter counts of the paper preset's baseline (all switches off) and full
model, and of the frozen CLIP ViT-B/16 image encoder (built with ``pretrained=None``).

Nucleus sampling (``sample_top_p``, top-p 0.9) against the textbook way (sort the whole
vocabulary, ``torch.multinomial``), on the tiny preset's and GPT-2's vocabularies, with
logits as peaked as a trained model's: the same tokens, and the time per decoding step.

    .venv/bin/python benchmarks/bench_generation.py [--batch 16] [--new-tokens 25]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import sevlm  # noqa: F401  (torchvision shim first)
import torch

from sevlm.config import DecoderConfig, ImageEncoderConfig, paper
from sevlm.model import SEVLM, build_image_encoder
from sevlm.text import SEVLMTokenizer


def paper_model_cfg(**switches):
    cfg = paper().model
    # distilgpt2's shape, randomly initialised (no hub access)
    cfg = dataclasses.replace(cfg, decoder=DecoderConfig(name_or_path=None, n_layer=6, n_head=12, n_embd=768))
    return dataclasses.replace(cfg, **switches)


def count(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def lexicon_or_none():
    try:
        from sevlm.vad import load_lexicon

        return load_lexicon("warriner")
    except Exception as exc:  # pragma: no cover - missing optional files
        print(f"(no VAD lexicon: {exc}; generated tokens get neutral VAD)")
        return None


def timed_generate(model, feats, new_tokens, use_cache) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    out = model.generate(
        feats, max_new_tokens=new_tokens, min_new_tokens=new_tokens, decoding="greedy", use_cache=use_cache
    )
    return time.perf_counter() - start, out


def textbook_top_p(logits, top_p, generator):
    sorted_p, sorted_idx = torch.softmax(logits.float(), dim=-1).sort(dim=-1, descending=True)
    before = sorted_p.cumsum(dim=-1) - sorted_p
    choice = torch.multinomial(sorted_p.masked_fill(before >= top_p, 0.0), 1, generator=generator)
    return sorted_idx.gather(-1, choice).squeeze(-1)


def bench_nucleus(batch: int, repeats: int = 30) -> None:
    from sevlm.model.generation import sample_top_p

    print(f"\n== nucleus sampling (top-p 0.9), batch {batch}, {repeats} steps each, interleaved")
    for name, vocab in (("tiny preset (8000 merges)", 8260), ("GPT-2", 50259)):
        logits = torch.randn(batch, vocab, generator=torch.Generator().manual_seed(0)) * 6
        spent = {"sample_top_p": 0.0, "textbook": 0.0}
        ours, theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        same = True
        for _ in range(repeats):
            t = time.perf_counter()
            a = sample_top_p(logits, 0.9, ours)
            spent["sample_top_p"] += time.perf_counter() - t
            t = time.perf_counter()
            b = textbook_top_p(logits, 0.9, theirs)
            spent["textbook"] += time.perf_counter() - t
            same = same and torch.equal(a, b)
        ms = {k: 1000 * v / repeats for k, v in spent.items()}
        print(f"{name:26s} vocabulary {vocab:6d}: sample_top_p {ms['sample_top_p']:6.2f} ms, textbook "
              f"{ms['textbook']:6.2f} ms per step ({ms['textbook'] / ms['sample_top_p']:.1f}x; identical tokens: {same})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=25)
    parser.add_argument("--patches", type=int, default=196)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tok = SEVLMTokenizer.offline()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    bench_nucleus(64)  # the tiny preset's evaluation batch

    # ----------------------------------------------------------- parameter counts
    print("\n== parameter counts (paper preset, distilgpt2-shaped decoder, d_v=768)")
    for name, switches in (
        ("baseline", dict(use_vad_features=False, use_vad_head=False, use_contrastive=False)),
        ("SEVLM (defaults)", {}),
    ):
        model = SEVLM.from_config(paper_model_cfg(**switches), tok, image_feature_dim=768)
        total, trainable = count(model)
        parts = {
            "decoder": model.decoder,
            "vad_model": model.vad_model,
            "vad_head": model.vad_head,
            "contrastive_head": model.contrastive_head,
        }
        detail = ", ".join(f"{k} {count(m)[0]:,}" for k, m in parts.items() if m is not None)
        print(f"{name:18s} total {total:,}  trainable {trainable:,}  ({detail})")
        del model
    encoder = build_image_encoder(dataclasses.replace(ImageEncoderConfig(), pretrained=None))
    total, trainable = count(encoder)
    print(f"{'CLIP ViT-B/16':18s} total {total:,}  trainable {trainable:,}  (frozen image encoder, "
          f"K={encoder.num_patches}, d_v={encoder.feature_dim})")
    del encoder

    # ------------------------------------------------------------------ generation
    print(f"\n== greedy generation, batch {args.batch}, {args.new_tokens} new tokens, "
          f"image features ({args.batch}, {args.patches}, 768)")
    model = SEVLM.from_config(paper_model_cfg(), tok, image_feature_dim=768, vad_lexicon=lexicon_or_none()).eval()
    feats = torch.randn(args.batch, args.patches, 768, generator=torch.Generator().manual_seed(0))
    timed_generate(model, feats[:2], 2, True)  # warm-up
    t_cache, out_cache = timed_generate(model, feats, args.new_tokens, use_cache=True)
    t_full, out_full = timed_generate(model, feats, args.new_tokens, use_cache=False)
    assert all(len(ids) == args.new_tokens for ids in out_cache)
    same = out_cache == out_full
    print(f"KV cache:               {t_cache:7.2f} s  ({1000 * t_cache / args.new_tokens:6.1f} ms/token step)")
    print(f"full-prefix recompute:  {t_full:7.2f} s  ({1000 * t_full / args.new_tokens:6.1f} ms/token step)")
    print(f"speed-up:               {t_full / t_cache:7.2f}x   (identical tokens: {same})")


if __name__ == "__main__":
    main()
