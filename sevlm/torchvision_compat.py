"""Make ``import torchvision`` (and through it open_clip and transformers) work on CPU torch.

PyPI only ships CUDA builds of torchvision. Imported next to a CPU-only torch, its
``torchvision/_meta_registrations.py`` registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` whose schemas were never defined (they come from the missing C++
extension), and the import dies with "operator torchvision::nms does not exist". That also
breaks ``import open_clip`` and ``from transformers import GPT2LMHeadModel``.

Defining the two schemas before torchvision's first import lets the pure-Python parts load.
The project never calls those operators. ``sevlm/__init__.py`` applies this, so every
process that imports the project (tests, Ray workers, CLIs) is covered.
"""

from __future__ import annotations

import sys

_LIBRARY = None  # keeps the torch.library.Library alive: the schemas vanish with it


def ensure_torchvision_importable() -> bool:
    """Define the missing op schemas if needed. Returns True if it had to."""
    global _LIBRARY
    if _LIBRARY is not None or "torchvision" in sys.modules:
        return False
    import torch

    if torch.version.cuda is not None:
        return False
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return False  # a real torchvision extension is present
    except RuntimeError:
        pass
    lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - schema-only library
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define(
        "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor"
    )
    _LIBRARY = lib
    return True
