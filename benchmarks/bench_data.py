"""Data benchmarks (CPU, offline).

1. ArtEmis scale: a generated ArtEmis v1.0-format CSV of real size (454,684 rows, 80,031
   paintings, 701 of them with 41+ annotations, a few duplicates / empty / short rows);
   time and peak memory of load + validation + split + dominant emotions, measured in a
   fresh process; tokenisation time of the training examples (a sample, extrapolated, or
   all of them with ``--full-tokenise``).
2. Training-step throughput with cached image features vs encoding the images on the fly,
   ViT-B/16 + distilgpt2 shapes, random weights, CPU: prints the ratio.
3. Image-encoder forward passes made by three consecutive data preparations (and, unless
   ``--skip-training``, three consecutive tiny training runs) on the same dataset: must
   equal the number of distinct images.

    python benchmarks/bench_data.py [--workdir DIR] [--steps 3] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sevlm  # noqa: E402,F401  (torchvision shim first)

N_ROWS = 454_684
N_PAINTINGS = 80_031
N_HIGH_REPETITION = 701
WORDS = (
    "the a of and is it this painting makes me feel looks like colors dark light sky sea "
    "woman man face eyes tree trees water red blue green yellow black white sad happy calm "
    "peaceful scary angry beautiful lonely bright strange because her his they there "
    "mountain flowers house field storm river death blood smile soft cold warm old young"
).split()
STYLES = [f"Style_{k:02d}" for k in range(27)]


# ------------------------------------------------------------------- part 1: CSV


def write_real_size_csv(path: Path, seed: int = 0) -> None:
    import pandas as pd

    from sevlm.emotions import EMOTIONS

    rng = np.random.default_rng(seed)
    counts = np.full(N_PAINTINGS, 5, dtype=np.int64)
    high = rng.choice(N_PAINTINGS, N_HIGH_REPETITION, replace=False)
    counts[high] = rng.integers(41, 46, N_HIGH_REPETITION)
    normal = np.setdiff1d(np.arange(N_PAINTINGS), high)
    extra = N_ROWS - counts.sum()
    np.add.at(counts, rng.choice(normal, extra, replace=True), 1)
    assert counts.sum() == N_ROWS

    names = np.array(
        [
            ("józef-mehoffer" if i % 97 == 0 else f"artist-{i % 3000:04d}") + f"_painting-{i:06d}"
            for i in range(N_PAINTINGS)
        ],
        dtype=object,
    )
    styles = np.array(STYLES, dtype=object)[rng.integers(0, len(STYLES), N_PAINTINGS)]
    painting = np.repeat(np.arange(N_PAINTINGS), counts)
    n_words = rng.integers(4, 38, N_ROWS)
    word_ids = rng.integers(0, len(WORDS), n_words.sum())
    words = np.array(WORDS, dtype=object)[word_ids]
    bounds = np.concatenate([[0], np.cumsum(n_words)])
    utterances = [" ".join(words[bounds[i] : bounds[i + 1]]) for i in range(N_ROWS)]
    frame = pd.DataFrame(
        {
            "art_style": styles[painting],
            "painting": names[painting],
            "emotion": np.array(EMOTIONS, dtype=object)[rng.integers(0, 9, N_ROWS)],
            "utterance": utterances,
            "repetition": counts[painting],
        }
    )
    frame.loc[rng.choice(N_ROWS, 30, replace=False), "utterance"] = ""  # empty utterances
    same = np.flatnonzero(painting[:-1] == painting[1:])
    first = rng.choice(same, 50, replace=False)  # 50 exact duplicates of the previous row
    frame.iloc[first + 1, [2, 3]] = frame.iloc[first, [2, 3]].to_numpy()
    frame.to_csv(path, index=False)


_LOAD_SCRIPT = r"""
import json, resource, sys, time
import sevlm
from sevlm.data import load_artemis, split_paintings, dominant_emotions, anchor_ids
def rss_mb(field):  # VmHWM: peak of this process image (ru_maxrss carries the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss_mb("VmRSS")
t0 = time.perf_counter()
frame, report = load_artemis(sys.argv[1])
t1 = time.perf_counter()
split = split_paintings(frame, seed=2021, anchors=anchor_ids(frame))
t2 = time.perf_counter()
dominant = dominant_emotions(frame)
t3 = time.perf_counter()
peak = rss_mb("VmHWM")
print(json.dumps({
    "rows_read": sum(report.rows_read.values()), "rows_kept": report.rows_kept,
    "paintings": int(frame["painting_id"].nunique()), "skips": report.skips,
    "split": {k: int(v) for k, v in split.value_counts().items()},
    "with_dominant": sum(v is not None for v in dominant.values()),
    "load_s": t1 - t0, "split_s": t2 - t1, "dominant_s": t3 - t2, "total_s": t3 - t0,
    "rss_after_imports_mb": base, "peak_rss_mb": peak,
}))
"""


def bench_artemis_scale(workdir: Path, full_tokenise: bool) -> None:
    print("== 1. ArtEmis-size CSV: load + validation + split + dominant emotions ==")
    csv = workdir / "artemis_real_size.csv"
    if not csv.exists():
        t = time.perf_counter()
        write_real_size_csv(csv)
        print(f"generated {csv} ({csv.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t:.1f} s")
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(csv)], capture_output=True, text=True, check=True, cwd=REPO
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"rows read {result['rows_read']:,}, kept {result['rows_kept']:,}, paintings {result['paintings']:,}; "
        f"skips {result['skips']}; split {result['split']}; with dominant emotion {result['with_dominant']:,}"
    )
    print(
        f"time: load+validate {result['load_s']:.2f} s, split {result['split_s']:.2f} s, "
        f"dominant {result['dominant_s']:.2f} s, total {result['total_s']:.2f} s"
    )
    print(
        f"memory: peak RSS {result['peak_rss_mb']:.0f} MB (after imports {result['rss_after_imports_mb']:.0f} MB, "
        f"so +{result['peak_rss_mb'] - result['rss_after_imports_mb']:.0f} MB for the data)"
    )

    # Tokenisation of the training examples (once per process, cached on PreparedData).
    from sevlm.data import load_artemis, split_paintings
    from sevlm.data import SplitData, TrainingExamples
    from sevlm.text import SEVLMTokenizer
    from sevlm.vad import load_lexicon

    frame, _ = load_artemis(csv)
    split = split_paintings(frame, seed=2021)
    train = frame[frame["painting_id"].map(split) == "train"]
    tokenizer, lexicon = SEVLMTokenizer.offline(), load_lexicon("warriner")
    sample = train if full_tokenise else train.iloc[:40_000]
    part = SplitData.from_annotations("train", sample[["painting_id", "art_style", "painting", "emotion", "utterance", "source", "row"]])
    t = time.perf_counter()
    examples = TrainingExamples(part, None, tokenizer, lexicon, max_length=30, seed=0)
    took = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(2000):
        examples[(i, 0)]
    per_item = (time.perf_counter() - t) / 2000
    scale = len(train) / len(sample)
    print(
        f"tokenisation (TrainingExamples) of {len(sample):,} train utterances: {took:.1f} s"
        + ("" if full_tokenise else f" -> about {took * scale:.0f} s for all {len(train):,}")
        + f"; item assembly (3 sentences + negatives) {per_item * 1e6:.0f} us"
    )


# --------------------------------------------------------- part 2: throughput


def bench_throughput(workdir: Path, steps: int, batch_size: int) -> None:
    import torch
    from PIL import Image

    from sevlm.config import apply_overrides, paper
    from sevlm.data import make_train_loader, prepare_data
    from sevlm.model.image_encoder import build_image_encoder
    from sevlm.text import SEVLMTokenizer
    from sevlm.vad import load_lexicon

    print(f"\n== 2. training-step throughput, ViT-B/16 + distilgpt2 shapes, random weights, CPU, batch {batch_size} ==")
    from sevlm.model.sevlm import SEVLM

    torch.manual_seed(0)
    cfg = apply_overrides(
        paper(),
        {
            "model.image_encoder.pretrained": None,
            "model.decoder.name_or_path": None,
            "data.synthetic_dir": str(workdir / "synthetic"),
            "data.synthetic_paintings": 40,
            "data.feature_cache_dir": str(workdir / "features"),
        },
    )
    tokenizer, lexicon = SEVLMTokenizer.offline(), load_lexicon("warriner")
    encoder = build_image_encoder(cfg.model.image_encoder, seed=0)
    t = time.perf_counter()
    data = prepare_data(cfg, tokenizer, lexicon, encoder, log_report=False, feature_batch_size=16)
    print(
        f"feature cache: {len(data.features)} images x {data.features.num_patches} x {data.features.feature_dim} fp16 "
        f"({data.features.images_encoded} encoded now, {time.perf_counter() - t:.1f} s)"
    )
    model = SEVLM.from_config(cfg.model, tokenizer, data.features.feature_dim, seed=0, vad_lexicon=lexicon)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    loader = make_train_loader(data, batch_size=batch_size, seed=0)

    def step(batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(batch).loss.backward()
        optimizer.step()

    def on_the_fly(batch) -> float:
        """What training without the cache does: decode + preprocess + encode the images."""
        t = time.perf_counter()
        pixels = torch.stack([encoder.preprocess(Image.open(data.image_paths[pid])) for pid in batch["painting_id"]])
        batch["image_features"] = encoder(pixels).float()
        return time.perf_counter() - t

    # Cached and on-the-fly steps alternate, so that a change in machine load hits both.
    batches = iter(loader)
    step(next(batches))  # warm-up
    times = {"cached": 0.0, "fly": 0.0, "encode": 0.0}
    for _ in range(steps):
        batch = next(batches)
        t = time.perf_counter()
        step(batch)
        times["cached"] += time.perf_counter() - t
        batch = next(batches)
        t = time.perf_counter()
        times["encode"] += on_the_fly(batch)
        step(batch)
        times["fly"] += time.perf_counter() - t
    cached, fly = steps / times["cached"], steps / times["fly"]
    print(f"cached features: {cached:.3f} steps/s ({cached * batch_size:.2f} samples/s, {1 / cached:.2f} s/step)")
    print(
        f"on-the-fly encoding: {fly:.3f} steps/s ({fly * batch_size:.2f} samples/s, {1 / fly:.2f} s/step, "
        f"of which {times['encode'] / steps:.2f} s decoding + encoding {batch_size} images)"
    )
    print(f"ratio cached / on-the-fly: {cached / fly:.2f}x")


# ------------------------------------------------------ part 3: forward passes


def bench_forward_passes(workdir: Path, skip_training: bool) -> None:
    import torch

    from sevlm.config import apply_overrides, tiny
    from sevlm.data import prepare_data
    from sevlm.model import image_encoder as ie
    from sevlm.text import SEVLMTokenizer
    from sevlm.vad import load_lexicon

    print("\n== 3. image-encoder forward passes over three consecutive runs on one dataset ==")
    for old in ("features-part3", "features-part3-training"):  # start from an empty cache
        shutil.rmtree(workdir / old, ignore_errors=True)
    counter = {"images": 0, "calls": 0}
    original = ie.FrozenImageEncoder.forward

    def counting_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        counter["images"] += int(pixels.shape[0])
        counter["calls"] += 1
        return original(self, pixels)

    ie.FrozenImageEncoder.forward = counting_forward
    try:
        base = {
            "data.synthetic_dir": str(workdir / "synthetic"),
            "data.feature_cache_dir": str(workdir / "features-part3"),
            "data.synthetic_paintings": 60,
        }
        cfg = apply_overrides(tiny(), base)
        tokenizer, lexicon = SEVLMTokenizer.offline(), load_lexicon("warriner")
        per_run = []
        for _ in range(3):
            before = counter["images"]
            encoder = ie.build_image_encoder(cfg.model.image_encoder, seed=0)  # as every run does
            data = prepare_data(cfg, tokenizer, lexicon, encoder, log_report=False)
            per_run.append(counter["images"] - before)
        distinct = len(data.image_paths) + len(data.features.failed)
        print(
            f"prepare_data x3: images through the encoder per run {per_run}, total {sum(per_run)}; "
            f"distinct images {distinct}  ->  {'OK' if sum(per_run) == distinct else 'MISMATCH'}"
        )
        if skip_training:
            return
        try:
            from sevlm.training.loop import run_training
        except Exception as exc:  # noqa: BLE001 - the training loop may not exist yet
            print(f"(training runs skipped: {type(exc).__name__}: {exc})")
            return
        train_cfg = apply_overrides(
            tiny(),
            {
                **base,
                "data.feature_cache_dir": str(workdir / "features-part3-training"),
                "train.epochs": 1,
                "train.max_steps": 2,
                "eval.use_meteor": False,
                "eval.max_eval_paintings": 4,
                "eval.max_new_tokens": 8,
            },
        )
        per_run = []
        for k in range(3):
            before = counter["images"]
            train_cfg.output_dir = str(workdir / f"run-{k}")
            try:
                run_training(train_cfg)
            except Exception as exc:  # noqa: BLE001
                print(f"(training run {k} failed: {type(exc).__name__}: {exc})")
                return
            per_run.append(counter["images"] - before)
        print(
            f"run_training x3: images through the encoder per run {per_run}, total {sum(per_run)}; "
            f"distinct images {distinct}  ->  {'OK' if sum(per_run) == distinct else 'MISMATCH'}"
        )
    finally:
        ie.FrozenImageEncoder.forward = original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help="where to write the generated data (default: a temp dir)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per mode")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--full-tokenise", action="store_true", help="tokenise all train utterances (minutes)")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-training", action="store_true", help="part 3 without the training runs")
    args = parser.parse_args(argv)
    torch_threads = os.environ.get("OMP_NUM_THREADS")
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, OMP_NUM_THREADS={torch_threads}")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.skip_scale:
            bench_artemis_scale(workdir, args.full_tokenise)
        if not args.skip_throughput:
            bench_throughput(workdir, args.steps, args.batch_size)
        bench_forward_passes(workdir, args.skip_training)
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
