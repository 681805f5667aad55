"""--decoder-init: the regime reaches every trial of the ablation sweep and the learning-rate
selection (their per-trial configurations), and sevlm.train's configuration."""

from __future__ import annotations

import pytest

from sevlm.variants import BASELINE, FULL, VARIANTS
from sweeps import ablation_benchmark, ablations
from sweeps import lr_selection as sel
from sweeps.lr_choice import VAD_RATIO, parse_candidate
from sweeps.spec import build_spec
from sweeps.strategies import Grid
from sevlm.config import compose

# The sweeps' trial configurations are resolved on the driver without starting Ray; the
# pre-trained decoder itself is built by the first trial that needs it (not here).


@pytest.fixture(autouse=True)
def _isolated(sweep_in_tmp):
    yield


def trial_configs(sweep, argv, cwd):
    args = sweep.parser().parse_args(argv)
    spec = build_spec(args, kind=sweep.kind, strategy_flags=sweep.strategy, default_overrides=sweep.default_overrides,
                      default_metric=sweep.default_metric, cwd=cwd)
    plan = spec.plan
    points = plan.points()
    assert len(points) == plan.total_trials()
    settings = spec.trial_settings
    return spec, [(p, compose(settings.base, settings.point_overrides(p), settings.run_overrides("t"))) for p in points]


def test_the_ablation_sweep_puts_every_trial_in_the_regime_it_is_given(sweep_in_tmp):
    spec, trials = trial_configs(ablations.SWEEP, ["--decoder-init", "pretrained"], sweep_in_tmp)
    assert {p[Grid.VARIANT_KEY] for p, _ in trials} == set(VARIANTS)  # the whole default grid
    lr = ablation_benchmark.PRETRAINED_LR_DECODER
    for point, cfg in trials:
        assert cfg.model.decoder_init == "pretrained", point
        assert cfg.model.decoder.name_or_path is None  # resolved by the trial, on its node
        assert (cfg.train.lr_decoder, cfg.train.lr_vad) == (lr, 2 * lr), point
        # the benchmark's budget
        assert cfg.train.epochs == ablation_benchmark.DEFAULT_OVERRIDES["tiny"]["train.epochs"]
    assert spec.overrides["model.decoder_init"] == "pretrained"
    # Nothing else moves: the variants' own switches are the scratch regime's.
    _, scratch = trial_configs(ablations.SWEEP, [], sweep_in_tmp)
    for (p, pre), (q, base) in zip(trials, scratch):
        assert p == q
        switches = lambda c: (c.model.use_contrastive, c.model.use_vad_features, c.model.alpha, c.seed)  # noqa: E731
        assert switches(pre) == switches(base)
        assert base.model.decoder_init == "scratch" and base.train.lr_decoder == 1e-2


def test_set_still_overrides_the_regimes_rate_and_quick_keeps_the_regime(sweep_in_tmp):
    _, trials = trial_configs(ablations.SWEEP, ["--decoder-init", "pretrained", "--set", "train.lr_decoder=3e-4"],
                              sweep_in_tmp)
    assert {cfg.train.lr_decoder for _, cfg in trials} == {3e-4}
    _, quick = trial_configs(ablations.SWEEP, ["--decoder-init", "pretrained", "--quick"], sweep_in_tmp)
    assert quick and all(cfg.model.decoder_init == "pretrained" and cfg.train.max_steps == 4 for _, cfg in quick)


def test_the_lr_selection_tries_its_lower_rates_on_the_pretrained_decoder(sweep_in_tmp):
    _, trials = trial_configs(sel.SWEEP, ["--decoder-init", "pretrained"], sweep_in_tmp)
    seen = set()
    for point, cfg in trials:
        model, lr = parse_candidate(point[Grid.VARIANT_KEY])
        assert cfg.model.decoder_init == "pretrained"
        assert cfg.train.lr_decoder == lr and cfg.train.lr_vad == pytest.approx(VAD_RATIO * lr)
        assert cfg.model.use_contrastive == (model == FULL)
        seen.add((model, lr))
    assert seen == {(m, lr) for m in (BASELINE, FULL) for lr in sel.PRETRAINED_DECODER_RATES}
    assert max(sel.PRETRAINED_DECODER_RATES) < min(r for r in sel.DECODER_RATES if r >= 1e-2)
    # The scratch regime keeps its grid; --quick takes the regime's lowest rate.
    _, scratch = trial_configs(sel.SWEEP, [], sweep_in_tmp)
    assert {c.train.lr_decoder for _, c in scratch} == set(sel.DECODER_RATES)
    assert all(c.model.decoder_init == "scratch" for _, c in scratch)
    _, quick = trial_configs(sel.SWEEP, ["--decoder-init", "pretrained", "--quick"], sweep_in_tmp)
    assert {c.train.lr_decoder for _, c in quick} == {sel.PRETRAINED_DECODER_RATES[0]}


def test_resume_refuses_a_new_regime(sweep_in_tmp, capsys):
    spec, _ = trial_configs(ablations.SWEEP, ["--name", "scratch-sweep", "--quick"], sweep_in_tmp)
    spec.save()
    assert ablations.main(["--resume", "--name", "scratch-sweep", "--decoder-init", "pretrained"]) == 2
    assert "--decoder-init" in capsys.readouterr().err
    assert ablations.main(["--help"]) == 0
    assert "--decoder-init" in capsys.readouterr().out


def test_train_flag_sets_the_key():
    from sevlm.train import build_parser, resolve_config

    parser = build_parser()
    assert resolve_config(parser.parse_args(["--decoder-init", "pretrained"])).model.decoder_init == "pretrained"
    assert resolve_config(parser.parse_args([])).model.decoder_init == "scratch"
    by_set = resolve_config(parser.parse_args(["--set", "model.decoder_init=pretrained"]))
    assert by_set.model.decoder_init == "pretrained"
    with pytest.raises(SystemExit):
        parser.parse_args(["--decoder-init", "warm"])


def test_both_sweeps_run_on_the_one_benchmark():
    benchmark = ablation_benchmark
    for sweep in (ablations.SWEEP, sel.SWEEP):
        assert sweep.default_overrides is benchmark.DEFAULT_OVERRIDES
        assert sweep.strategy.quick_overrides is benchmark.QUICK_OVERRIDES
        assert isinstance(sweep.strategy, benchmark.RegimeGridFlags)
    assert ablations.SWEEP.strategy.regime_overrides is benchmark.REGIME_OVERRIDES
