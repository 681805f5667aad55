"""Find the pretrained weights before anything trains, and fail once, clearly, if they are
not there.

A new user without the model hub used to see ``python -m sevlm.train --preset paper`` retry
for about a minute and end in 112 lines of traceback, and a sweep start every trial only to
fail each the same way. :func:`ensure_pretrained_available` runs first (in
``sevlm.train`` and the training loop, on every probed trial configuration in ``sweeps.spec`` on the
sweep's driver before the first trial). For the image encoder and the decoder each it
accepts a local path, a copy in the local cache, or a reachable hub; otherwise it raises
:class:`WeightsUnavailableError` naming what is missing and the flag that points at local
weights. When the hub is unreachable but everything is cached, it switches the process to
offline mode (``HF_HUB_OFFLINE``), so loading reads the cache instead of retrying the
network.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import sevlm  # noqa: F401  (torchvision shim before open_clip)
from sevlm.config import ModelConfig

HUB_TIMEOUT_S = 3.0
# transformers' and huggingface_hub's offline switches (read at import: also patched live).
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# A usable decoder in the cache: its config, weights and tokenizer (one name of each group).
DECODER_FILE_GROUPS = (("config.json",), ("model.safetensors", "pytorch_model.bin"), ("tokenizer.json", "vocab.json"))


class WeightsUnavailableError(ValueError):
    """Pretrained weights are neither local, nor cached, nor downloadable."""


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def offline_requested() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENV)


@functools.lru_cache(maxsize=4)
def hub_reachable(endpoint: str | None = None, timeout: float = HUB_TIMEOUT_S) -> bool:
    """One TCP connection to the hub (no retries): a machine without network answers within
    ``timeout`` seconds instead of after a minute of retries. Cached per process."""
    if offline_requested():
        return False
    url = urlparse(endpoint or hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def enable_offline_mode() -> None:
    """Make every later hub call in this process (and its children) read the cache only."""
    for name in OFFLINE_ENV:
        os.environ[name] = "1"
    try:
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True  # read at import time, so set it live too
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of transformers
        pass


def _hf_cached(repo_id: str, filenames: tuple[str, ...]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)


def _image_encoder_problem(arch: str, pretrained: str | None, reachable) -> str | None:
    """None when the encoder's weights can be loaded, else what is missing."""
    if pretrained is None or Path(pretrained).exists():
        return None
    import open_clip

    if pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        return (
            f"image encoder {arch} {pretrained!r}: neither a file nor an open_clip pretrained tag "
            f"of {arch} (tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'})"
        )
    source = open_clip.get_pretrained_cfg(arch, pretrained)
    hub = source.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub)
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        names = (filename,) if filename else (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
        if _hf_cached(repo_id, names):
            return None
    url = source.get("url", "")
    if url and (Path("~/.cache/clip").expanduser() / os.path.basename(url)).is_file():
        return None
    if reachable():
        return None
    return f"image encoder {arch} {pretrained!r} (not in the local cache: hub {hub or url})"


def _decoder_problem(name_or_path: str | None, reachable) -> str | None:
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    if path.exists():
        if not (path / "config.json").is_file():
            return f"decoder {name_or_path!r}: a directory without config.json (save it with save_pretrained)"
        return None
    if all(_hf_cached(name_or_path, group) for group in DECODER_FILE_GROUPS) or reachable():
        return None
    return f"decoder {name_or_path!r} (not in the local Hugging Face cache)"


FLAGS = {
    "image encoder": "--image-pretrained PATH (a local open_clip checkpoint file; 'none' for random weights)",
    "decoder": "--decoder DIR (a local GPT-2 directory saved with save_pretrained; 'none' for a random decoder)",
}


def ensure_pretrained_available(model: ModelConfig) -> None:
    """Raise :class:`WeightsUnavailableError` unless both pretrained parts can be loaded;
    switch to offline mode when the hub is unreachable and the cache has what is needed."""
    image, decoder = model.image_encoder, model.decoder
    if image.pretrained is None and decoder.name_or_path is None:
        return  # random weights: nothing to load (the tiny preset)
    reachable = functools.partial(hub_reachable, hub_endpoint())
    problems = [
        p for p in (
            _image_encoder_problem(image.arch, image.pretrained, reachable),
            _decoder_problem(decoder.name_or_path, reachable),
        ) if p is not None
    ]
    if problems:
        offline = "" if reachable() else f"the model hub ({hub_endpoint()}) is not reachable and "
        lines = [f"cannot load the pretrained weights: {offline}these are missing:"]
        for problem in problems:
            flag = FLAGS["image encoder" if problem.startswith("image encoder") else "decoder"]
            lines.append(f"  - {problem}\n    point at local weights with {flag}")
        lines.append("  (or --preset tiny for the offline model with random weights)")
        raise WeightsUnavailableError("\n".join(lines))
    if not reachable():
        enable_offline_mode()
