"""The frozen CLIP image encoder (open_clip), returning patch tokens f_I (K x d_v).

The patch tokens are the ``ln_post`` outputs before the projection (K=196, d_v=768 for
ViT-B/16), read with open_clip's ``output_tokens``. Images are normalised with CLIP's own
mean/std (the reference code wrongly used ImageNet's).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import sevlm  # noqa: F401  (torchvision shim before open_clip)
import torch
from torch import nn

from sevlm.config import ImageEncoderConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FrozenImageEncoder(nn.Module):
    """Wraps an open_clip vision tower; always in eval mode, never trained."""

    def __init__(self, visual: nn.Module, cfg: ImageEncoderConfig, weights_id: str) -> None:
        super().__init__()
        visual.output_tokens = True
        self.visual = visual
        self.cfg = cfg
        self.weights_id = weights_id
        self.image_size = cfg.image_size
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenImageEncoder:  # noqa: ARG002 - always frozen
        return super().train(False)

    @property
    def feature_dim(self) -> int:
        return int(self.visual.transformer.width)

    @property
    def num_patches(self) -> int:
        grid = self.visual.grid_size
        return int(grid[0] * grid[1])

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, K, d_v) contiguous patch tokens."""
        _, tokens = self.visual(pixels)
        return tokens.contiguous()

    def preprocess(self, image) -> torch.Tensor:
        """PIL image -> normalised (3, S, S) tensor: resize shorter side, centre crop."""
        from torchvision.transforms import functional as tf
        from torchvision.transforms import InterpolationMode

        image = image.convert("RGB")
        image = tf.resize(image, self.image_size, interpolation=InterpolationMode.BICUBIC)
        image = tf.center_crop(image, [self.image_size, self.image_size])
        tensor = tf.to_tensor(image)
        return tf.normalize(tensor, CLIP_MEAN, CLIP_STD)

    def cache_key(self) -> str:
        """Identifies (weights, preprocessing): features are reused only when it matches."""
        desc = {
            "weights": self.weights_id,
            "arch": self.cfg.arch,
            "image_size": self.image_size,
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
            "resize": "bicubic-shorter-side+center-crop",
            "tokens": "ln_post-patch-tokens",
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def _random_weights_id(visual: nn.Module) -> str:
    """Hash of randomly initialised weights (seeded), so two seeds never share a cache."""
    h = hashlib.sha256()
    for name, tensor in sorted(visual.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return "random-" + h.hexdigest()[:16]


def build_image_encoder(cfg: ImageEncoderConfig, seed: int = 0) -> FrozenImageEncoder:
    """From an open_clip pretrained tag, a local checkpoint path, or random init."""
    import open_clip
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    base = open_clip.get_model_config(cfg.arch)
    if base is None:
        raise ValueError(f"unknown open_clip architecture {cfg.arch!r}")
    vision = dict(base["vision_cfg"])
    overrides = {
        "width": cfg.width,
        "layers": cfg.layers,
        "heads": cfg.heads,
        "patch_size": cfg.patch_size,
    }
    custom = {k: v for k, v in overrides.items() if v is not None}
    if cfg.pretrained is None:
        heads = custom.pop("heads", None)
        vision.update(custom)
        vision["image_size"] = cfg.image_size
        if heads is not None:  # open_clip sets the head count through the head width
            vision["head_width"] = vision["width"] // heads
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            visual = _build_vision_tower(base["embed_dim"], CLIPVisionCfg(**vision))
        return FrozenImageEncoder(visual, cfg, _random_weights_id(visual))

    if custom:
        raise ValueError(
            "width/layers/heads/patch_size overrides only apply to a random encoder "
            "(image_encoder.pretrained = None)"
        )
    if Path(cfg.pretrained).exists():
        weights_id = f"file:{Path(cfg.pretrained).resolve().name}:{_file_digest(cfg.pretrained)}"
    else:
        weights_id = f"{cfg.arch}:{cfg.pretrained}"
    model = open_clip.create_model(cfg.arch, pretrained=cfg.pretrained)
    return FrozenImageEncoder(model.visual, cfg, weights_id)


def _file_digest(path: str, chunk: int = 1 << 20) -> str:
    """Size plus a hash of the first and last MiB: cheap on multi-GB checkpoints."""
    p = Path(path)
    h = hashlib.sha256(str(p.stat().st_size).encode())
    with open(p, "rb") as handle:
        h.update(handle.read(chunk))
        handle.seek(max(0, p.stat().st_size - chunk))
        h.update(handle.read(chunk))
    return h.hexdigest()[:16]
