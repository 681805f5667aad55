"""Sweeps over SEVLM with Ray Tune: one file per kind of sweep (``alpha_search.py``,
``ablations.py``), on a shared layer (``cli``, ``spec``, ``space``, ``strategies``,
``resources``, ``progress``, ``console``, ``summary``)."""


class SweepError(ValueError):
    """A bad flag or an impossible sweep (reported before any trial starts)."""
