"""Assigning ArtEmis paintings to train / val / test (and "rest"), deterministically.

v1.0 (:func:`split_paintings`): paintings with ``repetition > max_repetition`` (40) go to
"rest"; the others, sorted (numpy, never a Python ``set``), are permuted with
``numpy.random.default_rng(split_seed)``: the first ``round(f_val * n)`` go to val, the next
``round(f_test * n)`` to test, the rest to train. The same split on every machine.

v2.0 Combined (:func:`assign_splits`): adding ``Contrastive.csv`` must not move any v1
painting, and a contrastive painting must be evaluated where its anchor is (else a
painting made to contrast with a training painting is tested, or the reverse):

- every painting with v1 annotations keeps exactly its v1 split (the v1 rows alone decide
  it, so v1 and v2 runs test on the same v1 paintings);
- a painting only in ``Contrastive.csv`` goes where its anchor goes; with several anchors,
  the one that sorts first decides (counted when they disagree);
- its anchor is missing from v1, or set aside as "rest": it goes to train (counted), since
  there is no evaluation split to keep it out of.

This replaces the older rule "anchors forced into train", which reshuffled the v1 split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sevlm.data.report import REST, LoadReport

# Column load_artemis adds: True for rows read from Contrastive.csv.
CONTRASTIVE_FLAG = "contrastive"


def anchor_ids(frame: pd.DataFrame) -> list[str]:
    """Sorted ids of the v2 anchor paintings."""
    if "anchor_id" not in frame.columns:
        return []
    return sorted(frame["anchor_id"].dropna().unique().tolist())


def split_paintings(
    frame: pd.DataFrame,
    *,
    seed: int = 2021,
    fractions: Sequence[float] = (0.85, 0.05, 0.10),
    max_repetition: int = 40,
) -> pd.Series:
    """Deterministic v1 split by painting: a Series painting_id -> train/val/test/rest."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    repetition = frame.groupby("painting_id", sort=True)["repetition"].max()
    ids = repetition.index.to_numpy(dtype=object)
    is_rest = repetition.to_numpy() > max_repetition
    split = np.full(len(ids), "train", dtype=object)
    split[is_rest] = REST
    candidates = np.flatnonzero(~is_rest)
    n = len(candidates)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    order = candidates[np.random.default_rng(seed).permutation(n)]
    split[order[:n_val]] = "val"
    split[order[n_val : n_val + n_test]] = "test"
    return pd.Series(split, index=pd.Index(ids, name="painting_id"), name="split")


def assign_splits(
    frame: pd.DataFrame,
    *,
    seed: int = 2021,
    fractions: Sequence[float] = (0.85, 0.05, 0.10),
    max_repetition: int = 40,
    report: LoadReport | None = None,
) -> pd.Series:
    """Split of every painting of ``frame`` (v1, or v2 Combined): see the module doc."""
    is_contrastive = (
        frame[CONTRASTIVE_FLAG].to_numpy(dtype=bool)
        if CONTRASTIVE_FLAG in frame.columns
        else np.zeros(len(frame), dtype=bool)
    )
    v1 = frame[~is_contrastive]
    split = split_paintings(v1, seed=seed, fractions=fractions, max_repetition=max_repetition) if len(v1) else None
    if not is_contrastive.any():
        return split
    if split is None:
        split = pd.Series(dtype=object, index=pd.Index([], name="painting_id"), name="split")
    contrastive = frame[is_contrastive]
    new = contrastive[~contrastive["painting_id"].isin(split.index)]
    pairs = new[["painting_id", "anchor_id"]].drop_duplicates().sort_values(["painting_id", "anchor_id"])
    pairs["anchor_split"] = pairs["anchor_id"].map(split)
    usable = pairs[pairs["anchor_split"].notna() & (pairs["anchor_split"] != REST)]
    decided = usable.groupby("painting_id", sort=True)["anchor_split"].first()
    disagree = usable.groupby("painting_id")["anchor_split"].nunique()
    new_ids = np.sort(new["painting_id"].unique())
    assigned = decided.reindex(new_ids).fillna("train")
    if report is not None:
        report.note("contrastive_paintings_following_their_anchor", len(decided))
        report.note(
            "contrastive_paintings_to_train_anchor_missing_or_rest",
            int(len(new_ids) - len(decided)),
            [f"{pid}" for pid in new_ids if pid not in decided.index],
        )
        report.note(
            "contrastive_paintings_with_anchors_in_several_splits",
            int((disagree > 1).sum()),
            disagree.index[disagree > 1].tolist(),
        )
    out = pd.concat([split, assigned.rename("split")])
    out.index.name = "painting_id"
    return out.sort_index()
