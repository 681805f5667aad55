"""The paper's Table 1 (arXiv 2403.11150): CLIP-GPT2 Baseline and SEVLM on ArtEmis, percent.

Keyed by the value of the ``data.dataset`` configuration key; the paper reports no CIDEr.
"""

from __future__ import annotations

from analysis.predictions import ACC, BLEU, EA, METEOR_METRIC, ROUGE_METRIC, UNIQUE
from sevlm.variants import BASELINE, FULL

_COLUMNS = (ACC, EA, *BLEU, METEOR_METRIC, ROUGE_METRIC, UNIQUE)


def _row(*values: float) -> dict[str, float]:
    return dict(zip(_COLUMNS, values, strict=True))


TABLE1: dict[str, dict[str, dict[str, float]]] = {
    "artemis_v1": {
        BASELINE: _row(63.5, 58.9, 53.2, 29.2, 15.5, 8.4, 13.3, 29.9, 47.6),
        FULL: _row(65.6, 62.1, 54.2, 30.3, 16.4, 9.2, 13.9, 30.4, 62.0),
    },
    # ArtEmis v2.0 "Combined"
    "artemis_v2": {
        BASELINE: _row(40.7, 38.7, 51.2, 29.4, 16.4, 9.2, 13.7, 29.9, 61.2),
        FULL: _row(44.2, 42.6, 51.8, 30.4, 17.2, 10.1, 13.9, 30.4, 63.6),
    },
}
