"""Held-out evaluation of a trained SEVLM on a dataset it never trained on (EmoSet).

- :mod:`sevlm.heldout.scoring`: closed-set prediction over a subset of the emotions,
  accuracy, per-class accuracy, confusion matrix;
- :mod:`sevlm.heldout.classification`: one model classifies one EmoSet split (cached image
  features);
- :mod:`sevlm.heldout.restore`: the model of a checkpoint folder;
- :mod:`sevlm.heldout.outputs`: the files (CSV, figure, samples);
- :mod:`sevlm.heldout.run`: checkpoint -> files and metrics (``python -m sevlm.evaluate``,
  the sweeps' ``--heldout``).
"""

from sevlm.heldout.run import HELDOUT_DATASETS, HeldoutSet, evaluate_checkpoint, parse_heldout

__all__ = ["HELDOUT_DATASETS", "HeldoutSet", "evaluate_checkpoint", "parse_heldout"]
