"""On-disk cache of the frozen image encoder's patch features, keyed per image content and
read memory-mapped.

The image encoder is frozen, so its output for an image depends only on (encoder weights,
preprocessing, image content). The cache stores each distinct content once per encoder,
so the encoder runs exactly once per distinct image across datasets (ArtEmis v1 and v2
share their images), sweeps, processes and nodes that share the folder; fixing one image
re-encodes that image only.

Layout::

    <cache_dir>/file_hashes.json                 path -> (size, mtime, sha256 of the content)
    <cache_dir>/<encoder.cache_key()>/
        shards/<shard>.npy    (n, K, d_v) float16, a plain .npy read with np.load(mmap_mode="r")
        shards/<shard>.json   {"contents": [sha256 of row 0, ...], "failed": {sha256: reason}}
        <view>/index.json     one image set: {"keys": {image key: [shard, row]}, "failed": ...}

- ``encoder.cache_key()`` hashes the weights id, architecture and preprocessing, so other
  weights or another preprocessing never reuse a feature.
- Content hashes (sha256 of the file's bytes) are remembered per (path, size, mtime):
  a later run reads the file only when it changed.
- A *view* is the mapping of one image set (image key -> content) onto the shards; its name
  hashes the (key, content) pairs, so it identifies the features a run reads (the data
  fingerprint uses it) and does not change when a file is only touched.
- Writing happens under one ``filelock.FileLock`` per encoder: the contents no shard holds
  yet are encoded into ``<shard>.npy.tmp-<pid>`` (an ``np.lib.format.open_memmap`` filled
  batch by batch, so ArtEmis' 80k x 196 x 768 fp16 = 24 GB never sits in RAM), renamed into
  place, then ``<shard>.json`` marks the shard complete, then the view's ``index.json``.
  Processes that start at once wait on the lock and then read: exactly one encodes.
- Reading copies only the requested rows out of the memory maps (one per shard).
- A corrupt or unreadable image is a counted skip: it is listed in ``failed`` with the file
  path and reason (and remembered, so it is not decoded again), and ``prepare_data`` drops
  its painting and reports it (``corrupt_image``). Missing files are found earlier.

``FeatureCache.total_images_encoded`` / ``total_forward_calls`` count, per process, the
images and batches that went through an image encoder here (the benchmark and tests check
that each distinct image is encoded once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
SHARDS_DIR = "shards"
HASHES_FILE = "file_hashes.json"
CACHE_FORMAT = 2  # 1: one array per image set (keyed by file sizes and mtimes)
_CHUNK = 1 << 20


# ------------------------------------------------------------------- content hashes


def _sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def content_hashes(image_paths: Mapping[str, str | os.PathLike], memo_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """image key -> sha256 of the file's content; with ``memo_dir``, files whose (size,
    mtime) did not change since the last call are not read again."""
    memo: dict[str, list] = {}
    memo_path = None if memo_dir is None else Path(memo_dir) / HASHES_FILE
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}  # a damaged memo only costs re-reading the files
    out: dict[str, str] = {}
    fresh: dict[str, list] = {}
    for key, path in image_paths.items():
        full = os.path.abspath(path)
        st = os.stat(full)
        known = memo.get(full)
        if known is not None and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            out[key] = known[2]
        else:
            out[key] = _sha256_file(full)
            fresh[full] = [st.st_size, st.st_mtime_ns, out[key]]
    if memo_path is not None and fresh:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(memo_path) + ".lock"):
            current = json.loads(memo_path.read_text(encoding="utf-8")) if memo_path.is_file() else {}
            _atomic_write_json(memo_path, {**current, **fresh})
    return out


def view_id(contents: Mapping[str, str]) -> str:
    """Name of the view of one image set: a hash of its sorted (key, content) pairs."""
    h = hashlib.sha256(f"format={CACHE_FORMAT}".encode())
    for key in sorted(contents):
        h.update(f"\0{key}\0{contents[key]}".encode())
    return h.hexdigest()[:16]


def image_set_hash(image_paths: Mapping[str, str | os.PathLike]) -> str:
    """The view name of an image set (reads every file; ``FeatureCache.ensure`` memoises)."""
    return view_id(content_hashes(image_paths))


# --------------------------------------------------------------------- encoding


class _ImageFiles(torch.utils.data.Dataset):
    """Loads and preprocesses images; a failure is returned, not raised."""

    def __init__(self, paths: Sequence[str | os.PathLike], preprocess) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as image:
                image.load()
                return i, self.preprocess(image), None
        except Exception as exc:  # noqa: BLE001 - any decoder error means a corrupt file
            return i, None, f"{type(exc).__name__}: {exc}"


def _collate_images(items):
    return items


def _read_store(shards: Path) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
    """(content -> (shard, row), content -> failure reason) of every complete shard."""
    rows: dict[str, tuple[str, int]] = {}
    failed: dict[str, str] = {}
    if shards.is_dir():
        for meta_path in sorted(shards.glob("*.json")):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            for row, content in enumerate(meta["contents"]):
                if content:  # "" marks the row of an image that failed
                    rows.setdefault(content, (meta_path.stem, row))
            failed.update(meta.get("failed", {}))
    return rows, failed


def _encode_shard(encoder, todo: Mapping[str, str | os.PathLike], shards: Path, batch_size: int, progress: bool,
                  num_workers: int) -> int:
    """Encode ``todo`` (content -> one file with it) into a new shard; the number encoded."""
    shards.mkdir(parents=True, exist_ok=True)
    for stale in shards.glob("*.tmp-*"):  # left by a killed process (we hold the lock)
        stale.unlink(missing_ok=True)
    contents = sorted(todo)
    shape = (len(contents), int(encoder.num_patches), int(encoder.feature_dim))
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    tmp = shards / f"{name}.npy.tmp-{os.getpid()}"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
    try:
        device = next(encoder.parameters()).device
    except StopIteration:  # pragma: no cover - encoders without parameters
        device = torch.device("cpu")
    loader = torch.utils.data.DataLoader(
        _ImageFiles([todo[c] for c in contents], encoder.preprocess),
        batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate_images,
    )
    failed: dict[str, str] = {}
    good_rows: list[int] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(contents), desc="image features", unit="img")
    try:
        for items in loader:
            good = [(i, x) for i, x, err in items if err is None]
            for i, _, err in items:
                if err is not None:
                    failed[contents[i]] = err
            if good:
                rows = np.array([i for i, _ in good])
                pixels = torch.stack([x for _, x in good]).to(device)
                with torch.no_grad():
                    feats = encoder(pixels)
                if tuple(feats.shape[1:]) != shape[1:]:
                    raise ValueError(f"encoder returned {tuple(feats.shape)}, expected (B, {shape[1]}, {shape[2]})")
                out[rows] = feats.to(torch.float16).cpu().numpy()
                good_rows.extend(rows.tolist())
                FeatureCache.total_images_encoded += len(good)
                FeatureCache.total_forward_calls += 1
            if bar is not None:
                bar.update(len(items))
        out.flush()
        del out
        os.replace(tmp, shards / f"{name}.npy")
    finally:
        if bar is not None:
            bar.close()
        tmp.unlink(missing_ok=True)
    for content, reason in failed.items():
        log.warning("image skipped (corrupt or unreadable): %s: %s", todo[content], reason)
    # Failed rows stay in the array (zeros) but no content points at them.
    meta = {
        "format": CACHE_FORMAT,
        "encoder_key": encoder.cache_key(),
        "shape": list(shape),
        "contents": [c if c not in failed else "" for c in contents],
        "failed": failed,
    }
    _atomic_write_json(shards / f"{name}.json", meta)
    return len(good_rows)


# ---------------------------------------------------------------------- the cache


class FeatureCache:
    """Read-only view of one image set's features (memory-mapped shards)."""

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
        self.index: dict[str, tuple[str, int]] = {k: (s, int(r)) for k, (s, r) in meta["keys"].items()}
        self.failed: dict[str, str] = meta.get("failed", {})
        self.encoder_key: str = meta["encoder_key"]
        self.num_patches, self.feature_dim = int(meta["shape"][0]), int(meta["shape"][1])
        self.shards_dir = self.directory.parent / SHARDS_DIR
        self.images_encoded = 0  # by the ensure() call that returned this object
        self._arrays: dict[str, np.ndarray] = {}

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
        """The features of ``encoder`` on ``image_paths``, encoding only contents that no
        shard of this encoder holds yet. Safe to call from several processes at once.
        ``.images_encoded`` on the result is the number of images this call encoded."""
        if not image_paths:
            raise ValueError("no image to encode")
        root = Path(cache_dir) / encoder.cache_key()
        contents = content_hashes(image_paths, cache_dir)
        directory = root / view_id(contents)
        if (directory / INDEX_FILE).exists():
            return cls(directory)
        root.mkdir(parents=True, exist_ok=True)
        encoded = 0
        with FileLock(str(root / ".store.lock"), timeout=lock_timeout):
            if (directory / INDEX_FILE).exists():  # made by another process meanwhile
                return cls(directory)
            rows, failed = _read_store(root / SHARDS_DIR)
            todo: dict[str, str | os.PathLike] = {}
            for key in sorted(contents):
                content = contents[key]
                if content not in rows and content not in failed:
                    todo.setdefault(content, image_paths[key])
            if todo:
                encoded = _encode_shard(encoder, todo, root / SHARDS_DIR, batch_size, progress, num_workers)
                rows, failed = _read_store(root / SHARDS_DIR)
            meta = {
                "format": CACHE_FORMAT,
                "encoder_key": encoder.cache_key(),
                "shape": [int(encoder.num_patches), int(encoder.feature_dim)],
                "keys": {k: list(rows[c]) for k, c in sorted(contents.items()) if c in rows},
                "failed": {
                    k: f"{image_paths[k]}: {failed.get(c, 'not encoded')}"
                    for k, c in sorted(contents.items()) if c not in rows
                },
            }
            directory.mkdir(parents=True, exist_ok=True)
            _atomic_write_json(directory / INDEX_FILE, meta)
        cache = cls(directory)
        cache.images_encoded = encoded
        return cache

    # ------------------------------------------------------------------- reading

    def shard(self, name: str) -> np.ndarray:
        """One shard's (n, K, d_v) float16 features as a read-only ``np.memmap``."""
        array = self._arrays.get(name)
        if array is None:
            array = self._arrays[name] = np.load(self.shards_dir / f"{name}.npy", mmap_mode="r")
        return array

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def keys(self) -> list[str]:
        return list(self.index)

    def _locate(self, key: str) -> tuple[str, int]:
        try:
            return self.index[key]
        except KeyError:
            raise KeyError(f"image {key!r} is not in the feature cache {self.directory}") from None

    def get_numpy(self, keys: Sequence[str]) -> np.ndarray:
        """(B, K, d_v) float16 copy of the requested rows only."""
        located = [self._locate(k) for k in keys]
        shards = {s for s, _ in located}
        if len(shards) == 1:  # the common case: one fancy-indexed read, as from one array
            return np.asarray(self.shard(located[0][0])[[r for _, r in located]])
        out = np.empty((len(keys), self.num_patches, self.feature_dim), dtype=np.float16)
        for name in shards:
            at = [i for i, (s, _) in enumerate(located) if s == name]
            out[at] = self.shard(name)[[located[i][1] for i in at]]
        return out

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """(B, K, d_v) float32 tensor of the requested images (only their rows are read)."""
        return torch.from_numpy(self.get_numpy(keys).astype(np.float32))

    def get_one(self, key: str) -> torch.Tensor:
        """(K, d_v) float32 tensor of one image."""
        name, row = self._locate(key)
        return torch.from_numpy(np.array(self.shard(name)[row], dtype=np.float32))

    # Picklable for DataLoader workers: the memory maps are reopened lazily in each process.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def __repr__(self) -> str:
        return f"FeatureCache({self.directory}, images={len(self)}, K={self.num_patches}, d_v={self.feature_dim})"


def _atomic_write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
