"""How sweeps choose their trials, without a Ray cluster: the model's rules on trial
configurations, the TPE and grid strategies and their flags, the paper's variants."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from sevlm.config import apply_overrides, tiny, validate
from sevlm.variants import ALPHA_VARIANTS, BASELINE, FIGURES, FULL, LABELS, VARIANTS
from sweeps import SweepError
from sweeps.strategies import Grid, GridFlags, TPEFlags, strategy_from_dict
from trainables import tracking_schema as schema
from trainables.settings import TrialSettings


# -------------------------------------------------------------------- model rules


def test_model_rules_live_in_sevlm_config():
    cfg = tiny()
    validate(cfg)
    validate(cfg.model)
    with pytest.raises(ValueError, match="at least one negative"):
        validate(apply_overrides(cfg, {"model.neg_wrong_emotion": False, "model.neg_other_image": False}))
    validate(apply_overrides(cfg, {"model.use_contrastive": False, "model.neg_wrong_emotion": False,
                                   "model.neg_other_image": False}))
    for layers in (-1, 7):
        with pytest.raises(ValueError, match="0..6"):
            validate(apply_overrides(cfg, {"model.emotion_encoder_layers": layers}))

# --------------------------------------------------------------------- strategies


def _args(**values) -> argparse.Namespace:
    """The flags of both strategies, unset unless given."""
    parser = argparse.ArgumentParser()
    TPEFlags(space={}, default_trials=1).add_flags(parser)
    GridFlags(variants={}, default_seeds=1, quick_variants=(), quick_seeds=1, quick_overrides={}).add_flags(parser)
    args = parser.parse_args([])
    for key, value in values.items():
        setattr(args, key, value)
    return args


def _tiny_flat():
    from sevlm.config import to_flat_dict

    return to_flat_dict(tiny())


def test_tpe_puts_the_paper_point_first_and_sizes_its_sampler():
    flags = TPEFlags(space={"tiny": {"model.alpha": "log:0.1:10", "model.neg_other_image": "choice:true,false"}},
                     default_trials=8, short_names={"model.alpha": "alpha"})
    tpe = flags.build(_args(), "tiny", _tiny_flat(), {})
    assert tpe.paper_point == {"model.alpha": 2.0, "model.neg_other_image": True}
    assert tpe.num_samples() == tpe.total_trials() == 8 and tpe.param_space() == {}
    assert tpe.columns() == {"model.alpha": "alpha", "model.neg_other_image": "neg_other_image"}
    searcher = tpe.search_alg("val/rouge_l")
    assert searcher._points_to_evaluate == [tpe.paper_point]
    assert searcher._sampler._n_startup_trials == 4
    assert tpe.scheduler("val/rouge_l") is None
    assert tpe.trial_tags({"model.alpha": 2.0000000001, "model.neg_other_image": True}) == {
        schema.TAG_IS_PAPER_CONFIG: "true"}
    assert tpe.trial_tags({"model.alpha": 3.0, "model.neg_other_image": True})[schema.TAG_IS_PAPER_CONFIG] == "false"
    point_overrides = TrialSettings("s", "storage", point_layers=tpe.point_layers()).point_overrides
    assert point_overrides({"model.alpha": 3.0}) == {"model.alpha": 3.0}
    assert tpe.probe_points()[0] == tpe.paper_point and len(tpe.probe_points()) == 3
    params = tpe.parent_params()
    assert params["sweep.searcher"] == "optuna_tpe" and params["sweep.space.model.alpha"] == "log:0.1:10.0"
    assert json.loads(tpe.parent_tags()[schema.TAG_SEARCH_SPACE]) == tpe.space
    assert strategy_from_dict(tpe.to_dict()) == tpe

    asha = flags.build(_args(asha=True, asha_grace_period=2, paper_first=False, num_trials=3),
                       "tiny", _tiny_flat(), {})
    assert asha.paper_point == {} and not asha.search_alg("val/acc")._points_to_evaluate
    from ray.tune.schedulers import ASHAScheduler

    assert isinstance(asha.scheduler("val/acc"), ASHAScheduler)
    assert asha.parent_params()["sweep.scheduler"] == "asha" and asha.parent_params()["sweep.asha_grace_period"] == 2
    for args, fixed, message in [
        (_args(num_trials=0), {}, "--num-trials"),
        (_args(space=["model.alpha=log:3:10"]), {}, "paper's configuration is outside"),
        (_args(), {"model.alpha": 1.0}, "both searched"),
        (_args(asha_reduction_factor=1), {}, "reduction"),
    ]:
        with pytest.raises(SweepError, match=message):
            flags.build(args, "tiny", _tiny_flat(), fixed)


def tune_order(grid: Grid) -> list[tuple[str, int]]:
    """The (variant, seed) of each trial, in the order Tune creates them from the strategy."""
    from ray.tune.experiment import Experiment

    generator = grid.search_alg("val/acc")
    generator.add_configurations([Experiment("x", run=lambda c: None, config=grid.param_space(),
                                             num_samples=grid.num_samples())])
    order = []
    while (trial := generator.next_trial()) is not None:
        order.append((trial.config[Grid.VARIANT_KEY], trial.config[Grid.SEED_KEY]))
    return order


def test_grid_is_every_variant_at_every_seed():
    from ray.tune.experiment import Experiment

    flags = GridFlags(variants=VARIANTS, default_seeds=3, quick_variants=("baseline", "full"), quick_seeds=2,
                      quick_overrides={"train.max_steps": 4})
    grid = flags.build(_args(), "tiny", _tiny_flat(), {})
    assert list(grid.variants) == list(VARIANTS) and grid.seeds == [0, 1, 2]
    assert grid.total_trials() == 36 == grid.num_samples() == len(grid.points())
    config = {Grid.VARIANT_KEY: "no_vad_head", Grid.SEED_KEY: 2}
    point_overrides = TrialSettings("s", "storage", point_layers=grid.point_layers()).point_overrides
    assert point_overrides(config) == {**VARIANTS["no_vad_head"], "seed": 2}
    assert grid.trial_tags(config) == {schema.TAG_VARIANT: "no_vad_head", schema.TAG_SEED: "2"}
    assert strategy_from_dict(grid.to_dict()) == grid
    assert grid.parent_params()["sweep.variants"].split(",") == list(VARIANTS)

    # Tune runs every variant at seed 0 before any at seed 1: an interrupted sweep is paired.
    small = flags.build(_args(variants="full,baseline", seeds=2), "tiny", _tiny_flat(), {})
    assert list(small.variants) == ["baseline", "full"]  # the paper's order, whatever the flag's
    assert tune_order(small) == [("baseline", 0), ("full", 0), ("baseline", 1), ("full", 1)]
    # The grid's generator holds the sweep's concurrency (Tune applies it to Searchers only).
    generator = small.search_alg("val/acc", max_concurrent=1)
    generator.add_configurations([Experiment("x", run=lambda c: None, config=small.param_space(),
                                             num_samples=small.num_samples())])
    first = generator.next_trial()
    assert first is not None and generator.next_trial() is None  # one running: no second trial yet
    generator.on_trial_complete(first.trial_id)
    assert generator.next_trial() is not None

    # Variants declared with fewer seeds run at the first N only, unless --all-seeds.
    fewer = dataclasses.replace(flags, default_seed_counts={"full": 1, "no_vad_head": 5})
    grid = fewer.build(_args(variants="baseline,full,no_vad_head"), "tiny", _tiny_flat(), {})
    assert grid.seed_counts == {"full": 1}  # 5 >= 3 seeds: no reduction
    assert tune_order(grid) == [("baseline", 0), ("full", 0), ("no_vad_head", 0), ("baseline", 1),
                                ("no_vad_head", 1), ("baseline", 2), ("no_vad_head", 2)]
    assert grid.total_trials() == 7 and "full at 1" in grid.describe()
    assert strategy_from_dict(grid.to_dict()) == grid
    every = fewer.build(_args(variants="baseline,full", all_seeds=True), "tiny", _tiny_flat(), {})
    assert every.seed_counts == {} and every.total_trials() == 6

    quick = flags.build(_args(quick=True), "tiny", _tiny_flat(), {})
    assert list(quick.variants) == ["baseline", "full"] and quick.seeds == [0, 1]
    assert flags.extra_overrides(_args(quick=True)) == {"train.max_steps": 4}
    with pytest.raises(SweepError, match="unknown variant.*nope.*known: baseline, full, no_vad_features"):
        flags.build(_args(variants="full,nope"), "tiny", _tiny_flat(), {})
    with pytest.raises(SweepError, match="--seeds"):
        flags.build(_args(seeds=0), "tiny", _tiny_flat(), {})
    with pytest.raises(SweepError, match="model.alpha both fixed"):
        flags.build(_args(), "tiny", _tiny_flat(), {"model.alpha": 3.0})


def test_the_papers_variants():
    assert list(VARIANTS)[:2] == [BASELINE, FULL] and set(LABELS) == set(VARIANTS)
    assert {v for names in FIGURES.values() for v in names} == set(VARIANTS)
    cfg = tiny()
    for name, overrides in VARIANTS.items():
        validate(apply_overrides(cfg, overrides))
        assert set(overrides) == set(VARIANTS[FULL]), name  # complete, never relative to the preset
    full = apply_overrides(cfg, VARIANTS[FULL]).model
    assert (full.alpha, full.emotion_encoder_layers, full.use_contrastive, full.use_vad_head,
            full.use_vad_features, full.neg_wrong_emotion, full.neg_other_image) == (2.0, 3, True, True, True, True, True)
    base = apply_overrides(cfg, VARIANTS[BASELINE]).model
    assert not (base.use_vad_features or base.use_vad_head or base.use_contrastive)
    assert sorted(ALPHA_VARIANTS) == [0.5, 1.0, 2.0, 4.0, 8.0] and ALPHA_VARIANTS[2.0] == FULL
    for alpha, name in ALPHA_VARIANTS.items():
        assert VARIANTS[name]["model.alpha"] == alpha
        assert {k: v for k, v in VARIANTS[name].items() if k != "model.alpha"} == {
            k: v for k, v in VARIANTS[FULL].items() if k != "model.alpha"}
    # one change from the full model for each figure's variant
    for name in FIGURES["fig5"][1:] + FIGURES["fig6"][1:] + FIGURES["fig7"][1:]:
        assert sum(VARIANTS[name][k] != VARIANTS[FULL][k] for k in VARIANTS[FULL]) == 1, name
