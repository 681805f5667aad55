"""On-disk cache of the frozen image encoder's patch features, read memory-mapped.

The image encoder is frozen, so its output for an image depends only on (encoder weights,
preprocessing, image): the features are computed once per dataset and reused by every
epoch, trial and process.

Layout::

    <cache_dir>/<encoder.cache_key()>/<image-set hash>/
        features.npy   (N, K, d_v) float16, a plain .npy opened with np.load(mmap_mode="r")
        index.json     {"keys": {image key: row}, "failed": {image key: reason}, ...}

- ``encoder.cache_key()`` hashes the weights id, architecture and preprocessing, so other
  weights or another preprocessing never reuse a cache.
- The image-set hash covers the sorted image keys with each file's size and modification
  time (hashing the content of 80k full-size WikiArt files would take minutes; a file
  rewritten in place gets a new mtime and therefore a new cache).
- Writing happens under a ``filelock.FileLock`` into ``features.npy.tmp-<pid>`` (an
  ``np.lib.format.open_memmap`` filled batch by batch, so ArtEmis' 80k x 196 x 768 fp16 =
  24 GB never sits in RAM) that is ``os.replace``-d into place; ``index.json`` is written
  last, atomically, and marks the cache complete. Processes that start at once wait on the
  lock and then read the finished cache: exactly one computes it.
- Reading copies only the requested rows out of the memory map.
- A corrupt or unreadable image is a counted skip: its row stays empty, it is listed in
  ``failed`` with the file path and reason, and ``prepare_data`` drops its painting and
  reports it (``corrupt_image``). Missing files are found earlier (``missing_image``).

``FeatureCache.total_images_encoded`` / ``total_forward_calls`` count, per process, the
images and batches that went through an image encoder here (the benchmark and tests check
that repeated runs on one dataset encode each distinct image once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

log = logging.getLogger(__name__)

FEATURES_FILE = "features.npy"
INDEX_FILE = "index.json"
CACHE_FORMAT = 1


def image_set_hash(image_paths: Mapping[str, str | os.PathLike]) -> str:
    """Hash of the sorted image keys with each file's size and mtime."""
    h = hashlib.sha256(f"format={CACHE_FORMAT}".encode())
    for key in sorted(image_paths):
        st = os.stat(image_paths[key])
        h.update(f"\0{key}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class _ImageFiles(torch.utils.data.Dataset):
    """Loads and preprocesses images; a failure is returned, not raised."""

    def __init__(self, keys: Sequence[str], paths: Mapping[str, str | os.PathLike], preprocess) -> None:
        self.keys = list(keys)
        self.paths = paths
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        from PIL import Image

        path = self.paths[self.keys[i]]
        try:
            with Image.open(path) as image:
                image.load()
                return i, self.preprocess(image), None
        except Exception as exc:  # noqa: BLE001 - any decoder error means a corrupt file
            return i, None, f"{path}: {type(exc).__name__}: {exc}"


def _collate_images(items):
    return items


class FeatureCache:
    """Read-only view of one complete cache directory (features memory-mapped)."""

    total_images_encoded = 0  # per process, all caches
    total_forward_calls = 0

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.exists():
            raise FileNotFoundError(f"feature cache incomplete or missing: {index_path}")
        meta = json.loads(index_path.read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{index_path}: unsupported feature-cache format {meta.get('format')!r}")
        self.meta = meta
        self.index: dict[str, int] = meta["keys"]
        self.failed: dict[str, str] = meta.get("failed", {})
        self.encoder_key: str = meta["encoder_key"]
        self.num_patches, self.feature_dim = int(meta["shape"][1]), int(meta["shape"][2])
        self.images_encoded = 0  # by the ensure() call that returned this object
        self._array: np.ndarray | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def ensure(
        cls,
        encoder,
        image_paths: Mapping[str, str | os.PathLike],
        cache_dir: str | os.PathLike,
        batch_size: int = 64,
        progress: bool = False,
        num_workers: int = 0,
        lock_timeout: float = -1,
    ) -> FeatureCache:
        """Return the cache of ``encoder`` on ``image_paths``, computing it if missing.

        Safe to call from several processes at once: one computes, the others wait on the
        lock and read. ``.images_encoded`` on the result is the number of images this call
        encoded (0 when the cache existed).
        """
        if not image_paths:
            raise ValueError("no image to encode")
        directory = Path(cache_dir) / encoder.cache_key() / image_set_hash(image_paths)
        if (directory / INDEX_FILE).exists():
            return cls(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(directory) + ".lock", timeout=lock_timeout):
            if (directory / INDEX_FILE).exists():  # computed by another process meanwhile
                return cls(directory)
            encoded = cls._compute(encoder, image_paths, directory, batch_size, progress, num_workers)
        cache = cls(directory)
        cache.images_encoded = encoded
        return cache

    @classmethod
    def _compute(cls, encoder, image_paths, directory: Path, batch_size, progress, num_workers) -> int:
        for stale in directory.glob(f"{FEATURES_FILE}.tmp-*"):  # left by a killed process
            stale.unlink(missing_ok=True)
        keys = sorted(image_paths)
        shape = (len(keys), int(encoder.num_patches), int(encoder.feature_dim))
        tmp = directory / f"{FEATURES_FILE}.tmp-{os.getpid()}"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        try:
            device = next(encoder.parameters()).device
        except StopIteration:  # pragma: no cover - encoders without parameters
            device = torch.device("cpu")
        loader = torch.utils.data.DataLoader(
            _ImageFiles(keys, image_paths, encoder.preprocess),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=_collate_images,
        )
        failed: dict[str, str] = {}
        encoded = 0
        started = time.perf_counter()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(keys), desc="image features", unit="img")
        try:
            for items in loader:
                good = [(i, x) for i, x, err in items if err is None]
                for i, _, err in items:
                    if err is not None:
                        failed[keys[i]] = err
                if good:
                    rows = np.array([i for i, _ in good])
                    pixels = torch.stack([x for _, x in good]).to(device)
                    with torch.no_grad():
                        feats = encoder(pixels)
                    if tuple(feats.shape[1:]) != shape[1:]:
                        raise ValueError(f"encoder returned {tuple(feats.shape)}, expected (B, {shape[1]}, {shape[2]})")
                    out[rows] = feats.to(torch.float16).cpu().numpy()
                    encoded += len(good)
                    cls.total_images_encoded += len(good)
                    cls.total_forward_calls += 1
                if bar is not None:
                    bar.update(len(items))
            out.flush()
            del out
            os.replace(tmp, directory / FEATURES_FILE)
        finally:
            if bar is not None:
                bar.close()
            tmp.unlink(missing_ok=True)
        for key, reason in failed.items():
            log.warning("image skipped (corrupt or unreadable): %s", reason)
        meta = {
            "format": CACHE_FORMAT,
            "encoder_key": encoder.cache_key(),
            "shape": list(shape),
            "dtype": "float16",
            "keys": {k: i for i, k in enumerate(keys) if k not in failed},
            "failed": failed,
            "images_encoded": encoded,
            "seconds": round(time.perf_counter() - started, 3),
        }
        _atomic_write_json(directory / INDEX_FILE, meta)
        return encoded

    # ------------------------------------------------------------------- reading

    @property
    def array(self) -> np.ndarray:
        """The (N, K, d_v) float16 features as a read-only ``np.memmap``."""
        if self._array is None:
            self._array = np.load(self.directory / FEATURES_FILE, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def keys(self) -> list[str]:
        return list(self.index)

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self.index[k] for k in keys), dtype=np.int64, count=len(keys))
        except KeyError as exc:
            raise KeyError(f"image {exc.args[0]!r} is not in the feature cache {self.directory}") from None

    def get_numpy(self, keys: Sequence[str]) -> np.ndarray:
        """(B, K, d_v) float16 copy of the requested rows only."""
        return np.asarray(self.array[self.rows(keys)])

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """(B, K, d_v) float32 tensor of the requested images (only their rows are read)."""
        return torch.from_numpy(self.get_numpy(keys).astype(np.float32))

    def get_one(self, key: str) -> torch.Tensor:
        """(K, d_v) float32 tensor of one image."""
        return torch.from_numpy(np.array(self.array[self.index[key]], dtype=np.float32))

    # Picklable for DataLoader workers: the memory map is reopened lazily in each process.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    def __repr__(self) -> str:
        return f"FeatureCache({self.directory}, images={len(self)}, K={self.num_patches}, d_v={self.feature_dim})"


def _atomic_write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
