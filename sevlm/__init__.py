"""SEVLM: Small Emotional Vision Language Model for visual art (plain PyTorch).

Nothing in this package imports Ray or MLflow; ``trainables/`` adapts it to them.
"""

from sevlm.torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
