"""SEVLM: Small Emotional Vision Language Model for visual art (plain PyTorch).

Nothing in this package imports Ray or MLflow; ``trainables/`` adapts it to them.
``import sevlm`` imports no torch either: the torchvision shim waits for torchvision's
first import (:mod:`sevlm.torchvision_compat` says why a hook).
"""

from sevlm.torchvision_compat import install_import_hook

install_import_hook()

__version__ = "0.1.0"
