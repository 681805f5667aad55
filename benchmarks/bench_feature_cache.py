"""Feature cache keyed per image content: reading speed side by side with the former layout,
and encoder calls across two image sets that share images (CPU, offline).

The former cache stored one image set as one contiguous ``features.npy`` (row = position
in the sorted keys). The per-image cache stores contents in shards (one per ``ensure`` call
that found new images) and maps an image set onto them. Both are read from the same
page-cached files with the same access patterns:

- ``get_one``: one random image at a time (a training item and its two negatives);
- ``get``: batches of ``--batch`` random images (evaluation).

Features come from a stand-in encoder (random rows with ViT-B/16's K=196, d_v=768), so the
benchmark measures the cache, not CLIP. The first set holds 2/3 of the images, the second
all of them: the second ``ensure`` encodes only the last third (two shards, the case of
ArtEmis v1 then v2), and the reads of the second set cross both shards.

    python benchmarks/bench_feature_cache.py [--images 1500] [--rounds 5] [--batch 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sevlm  # noqa: E402,F401  (torchvision shim first)
import torch  # noqa: E402
from torch import nn  # noqa: E402

from sevlm.data.feature_cache import FeatureCache  # noqa: E402


class StandInEncoder(nn.Module):
    """The encoder interface the cache uses, with random ViT-B/16-shaped outputs."""

    num_patches, feature_dim = 196, 768

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.generator = torch.Generator().manual_seed(0)

    def cache_key(self) -> str:
        return "bench-stand-in"

    def preprocess(self, image) -> torch.Tensor:
        return torch.zeros(1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(pixels), self.num_patches, self.feature_dim, generator=self.generator)


def write_images(directory: Path, n: int) -> dict[str, Path]:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i in range(n):
        path = directory / f"img-{i:05d}.png"
        Image.new("RGB", (4, 4), (i % 256, (i // 256) % 256, 7)).save(path)
        paths[f"style/img-{i:05d}"] = path
    return paths


class FormerLayout:
    """Today's reading path before the change: one .npy, key -> row, fancy indexing."""

    def __init__(self, cache: FeatureCache, keys: list[str], path: Path) -> None:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16,
                                        shape=(len(keys), cache.num_patches, cache.feature_dim))
        for start in range(0, len(keys), 256):
            out[start:start + 256] = cache.get_numpy(keys[start:start + 256])
        out.flush()
        del out
        self.index = {k: i for i, k in enumerate(keys)}
        self.array = np.load(path, mmap_mode="r")

    def get(self, keys):
        rows = np.fromiter((self.index[k] for k in keys), dtype=np.int64, count=len(keys))
        return torch.from_numpy(np.asarray(self.array[rows]).astype(np.float32))

    def get_one(self, key):
        return torch.from_numpy(np.array(self.array[self.index[key]], dtype=np.float32))


def timed(fn, calls) -> float:
    start = time.perf_counter()
    for args in calls:
        fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--singles", type=int, default=3000, help="get_one calls per round")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-feature-cache-") as tmp:
        tmp = Path(tmp)
        paths = write_images(tmp / "images", args.images)
        keys = sorted(paths)
        encoder = StandInEncoder()
        first = {k: paths[k] for k in keys[: 2 * len(keys) // 3]}
        start = time.perf_counter()
        FeatureCache.ensure(encoder, first, tmp / "cache", batch_size=128)
        t_first = time.perf_counter() - start
        start = time.perf_counter()
        cache = FeatureCache.ensure(encoder, paths, tmp / "cache", batch_size=128)
        t_second = time.perf_counter() - start
        start = time.perf_counter()
        FeatureCache.ensure(encoder, paths, tmp / "cache", batch_size=128)
        t_again = time.perf_counter() - start
        shards = len({s for s, _ in cache.index.values()})
        print(f"images: {args.images}; set 1 = {len(first)} images, set 2 = all (shares set 1's)")
        print(f"encoded: set 1 {len(first)}, set 2 {cache.images_encoded} (= the images set 1 lacks), "
              f"in total {FeatureCache.total_images_encoded} = distinct images {len(keys)}")
        print(f"ensure: set 1 {t_first:.2f} s, set 2 {t_second:.2f} s, set 2 again {t_again:.3f} s "
              "(hash memo + view lookup)")

        former = FormerLayout(cache, keys, tmp / "former.npy")
        rng = np.random.default_rng(0)
        ratios_one, ratios_batch = [], []
        for _ in range(args.rounds):
            singles = [(keys[i],) for i in rng.integers(0, len(keys), args.singles)]
            batches = [([keys[i] for i in rng.integers(0, len(keys), args.batch)],)
                       for _ in range(max(1, args.singles // args.batch))]
            # Same calls, alternating order, warm page cache for both.
            timed(cache.get_one, singles[:50]), timed(former.get_one, singles[:50])
            new_one, old_one = timed(cache.get_one, singles), timed(former.get_one, singles)
            old_batch, new_batch = timed(former.get, batches), timed(cache.get, batches)
            ratios_one.append(new_one / old_one)
            ratios_batch.append(new_batch / old_batch)
            assert torch.equal(cache.get(batches[0][0]), former.get(batches[0][0]))
        print(f"reading ({shards} shards vs one array), time per-image cache / former layout, "
              f"median of {args.rounds} rounds:")
        print(f"  get_one ({args.singles} random images): {statistics.median(ratios_one):.2f}x "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios_one)})")
        print(f"  get (batches of {args.batch}):          {statistics.median(ratios_batch):.2f}x "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios_batch)})")


if __name__ == "__main__":
    main()
