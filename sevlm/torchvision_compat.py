"""Make ``import torchvision`` (and through it open_clip and transformers) work on CPU torch.

PyPI only ships CUDA builds of torchvision. Imported next to a CPU-only torch, its
``torchvision/_meta_registrations.py`` registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` whose schemas were never defined (they come from the missing C++
extension), and the import dies with "operator torchvision::nms does not exist". That also
breaks ``import open_clip`` and ``from transformers import GPT2LMHeadModel``.

Defining the two schemas before torchvision's first import lets the pure-Python parts load.
The project never calls those operators.

When: ``sevlm/__init__.py`` calls :func:`install_import_hook`, which puts a finder at the
front of ``sys.meta_path`` that applies :func:`ensure_torchvision_importable` the moment
``torchvision`` is first imported, by whoever imports it, and then removes itself. Why a
hook rather than a call at the top of each module that imports open_clip or transformers:

- ``import sevlm`` (the config, the names in :mod:`sevlm.names`) stays free of torch, which
  the shim needs: readers of the MLflow schema and the analysis do not pay for it;
- torchvision is reached by many paths the project does not own (open_clip imports it at
  once, transformers only deep inside some of its lazy modules, a test or a notebook may
  import either directly after ``import sevlm``); a list of call sites would miss the next
  one, the hook sees every one;
- every process that imports any ``sevlm.*`` module runs ``sevlm/__init__.py`` first (tests,
  Ray workers unpickling a trainable, CLIs, DataLoader workers), so every one is covered, as
  it was when the package applied the shim eagerly.

As before, a process that imports torchvision before sevlm is not covered.
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


class _ShimBeforeTorchvision:
    """A ``sys.meta_path`` finder that finds nothing: asked for ``torchvision``, it removes
    itself, applies the shim, and lets the ordinary finders import torchvision."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            # Out first: importing torch below must not come back here.
            uninstall_import_hook()
            ensure_torchvision_importable()
        return None


def _installed() -> list:
    return [f for f in sys.meta_path if isinstance(f, _ShimBeforeTorchvision)]


def install_import_hook() -> bool:
    """Apply the shim on torchvision's first import. Returns False if nothing is left to do
    (torchvision already imported, or the hook already installed)."""
    if "torchvision" in sys.modules or _installed():
        return False
    sys.meta_path.insert(0, _ShimBeforeTorchvision())
    return True


def uninstall_import_hook() -> None:
    for finder in _installed():
        sys.meta_path.remove(finder)
