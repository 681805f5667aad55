"""How a sweep chooses its trials: what it gives Tune, how a trial's Tune config becomes
configuration overrides, and the flags that shape it.

* :class:`TPE`: Optuna's TPE over a search space, the paper's configuration first,
  optionally with ASHA (the alpha search).
* :class:`Grid`: every named variant at every seed, through ``tune.grid_search`` and no
  searcher (the ablation sweep).

A strategy is plain data (saved with the sweep, rebuilt on ``--resume``, pickled into the
trials). Its flags come from a ``*Flags`` object that a sweep file declares with its own
defaults (:class:`TPEFlags`, :class:`GridFlags`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sweeps import SweepError
from sweeps.space import base_point, check_space, corners, parse_space
from trainables import tracking_schema as schema
from trainables.trial import MODE

ASHA_MAX_T = 100_000


class Strategy:
    """What every strategy gives the sweep (see the module docstring)."""

    kind: ClassVar[str]

    def param_space(self) -> dict[str, Any]:
        raise NotImplementedError

    def search_alg(self, metric: str, max_concurrent: int | None = None):
        """Tune's search algorithm (None: Tune's default). ``max_concurrent``: the sweep's
        concurrency, which Tune applies to a ``Searcher`` itself but ignores for any other
        search algorithm (it would start every trial of a grid at once)."""
        return None

    def scheduler(self, metric: str):
        return None

    def num_samples(self) -> int:
        """Tune's ``num_samples`` (a grid repeats itself that often)."""
        raise NotImplementedError

    def total_trials(self) -> int:
        raise NotImplementedError

    def describe(self) -> str:
        """A few words for the console: how the trials are chosen."""
        raise NotImplementedError

    def parent_params(self) -> dict[str, Any]:
        """Settings of the strategy: params of the parent run (``sweep.<setting>``)."""
        raise NotImplementedError

    def parent_tags(self) -> dict[str, str]:
        """Tags of the parent run: the space searched or the grid run, as JSON."""
        raise NotImplementedError

    def columns(self) -> dict[str, str]:
        """Tune config key -> its header in the progress and results tables."""
        raise NotImplementedError

    def point_layers(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Keys of a trial's Tune config whose value names a layer of configuration
        overrides (``trainables.settings.TrialSettings.point_layers``); every other key of
        the config is a configuration key."""
        return {}

    def trial_tags(self, config: dict[str, Any]) -> dict[str, str]:
        """MLflow tags of a trial's run."""
        raise NotImplementedError

    def probe_points(self) -> list[dict[str, Any]]:
        """Tune configs tried (as configurations) before the sweep starts."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}


def strategy_from_dict(data: dict[str, Any]) -> Strategy:
    data = dict(data)
    cls = {TPE.kind: TPE, Grid.kind: Grid}[data.pop("kind")]
    return cls(**data)


# ------------------------------------------------------------------------------- TPE


@dataclass
class TPE(Strategy):
    kind: ClassVar[str] = "optuna_tpe"

    space: dict[str, str]  # key -> spec text (sweeps.space)
    num_trials: int
    search_seed: int = 0
    paper_point: dict[str, Any] = field(default_factory=dict)  # empty: no paper-first trial
    short_names: dict[str, str] = field(default_factory=dict)
    asha_grace_period: int | None = None  # None: no ASHA
    asha_reduction_factor: int = 2

    def param_space(self) -> dict[str, Any]:
        return {}  # the searcher proposes every point

    def search_alg(self, metric: str, max_concurrent: int | None = None):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # Optuna's default of 10 random start-up trials would turn a 6-8 trial sweep into a
        # random search: TPE models after half the trials (at least 3, at most 10). The liar
        # keeps concurrent trials from being handed the same point; multivariate TPE models
        # alpha and the learning rates jointly.
        sampler = optuna.samplers.TPESampler(
            seed=self.search_seed,
            n_startup_trials=min(10, max(3, self.num_trials // 2)),
            multivariate=True,
            constant_liar=True,
        )
        return OptunaSearch(
            space={k: s.distribution() for k, s in parse_space(self.space).items()},
            metric=metric,
            mode=MODE,
            points_to_evaluate=[dict(self.paper_point)] if self.paper_point else None,
            sampler=sampler,
        )

    def scheduler(self, metric: str):
        if self.asha_grace_period is None:
            return None
        from ray.tune.schedulers import ASHAScheduler

        # time_attr: evaluations reported so far. max_t must never be reached (ASHA stops a
        # trial there, before its final test report): the runs end by themselves.
        return ASHAScheduler(time_attr="training_iteration", metric=metric, mode=MODE, max_t=ASHA_MAX_T,
                             grace_period=self.asha_grace_period, reduction_factor=self.asha_reduction_factor)

    def num_samples(self) -> int:
        return self.num_trials

    def total_trials(self) -> int:
        return self.num_trials

    def describe(self) -> str:
        return ("Optuna TPE" + (", the paper's configuration first" if self.paper_point else "")
                + (", ASHA" if self.asha_grace_period is not None else ""))

    def parent_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "searcher": self.kind,
            "num_trials": self.num_trials,
            "search_seed": self.search_seed,
            "paper_first": bool(self.paper_point),
            "scheduler": "fifo" if self.asha_grace_period is None else "asha",
        }
        if self.asha_grace_period is not None:
            params["asha_grace_period"] = self.asha_grace_period
            params["asha_reduction_factor"] = self.asha_reduction_factor
        return {**{schema.PARENT_PARAM_PREFIX + k: v for k, v in params.items()},
                **{schema.PARENT_SPACE_PREFIX + k: v for k, v in self.space.items()}}

    def parent_tags(self) -> dict[str, str]:
        return {schema.TAG_SEARCH_SPACE: json.dumps(self.space)}

    def columns(self) -> dict[str, str]:
        return {k: self.short_names.get(k, k.rsplit(".", 1)[-1]) for k in self.space}

    def trial_tags(self, config: dict[str, Any]) -> dict[str, str]:
        return {schema.TAG_IS_PAPER_CONFIG: str(self.is_paper_point(config)).lower()}

    def is_paper_point(self, config: dict[str, Any]) -> bool:
        def same(a, b) -> bool:
            if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
                return math.isclose(a, float(b), rel_tol=1e-9)
            return a == b

        return bool(self.paper_point) and all(same(v, config.get(k)) for k, v in self.paper_point.items())

    def probe_points(self) -> list[dict[str, Any]]:
        return [dict(self.paper_point)] * bool(self.paper_point) + corners(parse_space(self.space))


@dataclass(frozen=True)
class TPEFlags:
    """The flags of a TPE sweep, with the defaults its sweep file declares."""

    space: dict[str, dict[str, str]]  # preset -> {key: spec}
    default_trials: int
    short_names: dict[str, str] = field(default_factory=dict)
    defining: ClassVar[tuple[str, ...]] = (
        "num_trials", "space", "paper_first", "search_seed", "asha", "asha_grace_period",
        "asha_reduction_factor",
    )

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("search (Optuna TPE)")
        g.add_argument("--num-trials", "--num-samples", dest="num_trials", type=int, default=None,
                       help=f"number of trials (default {self.default_trials})")
        g.add_argument("--space", action="append", default=None, metavar="KEY=SPEC",
                       help="change the search space: log:LO:HI, float:LO:HI, int:LO:HI, "
                            "choice:A,B,..., or off (repeatable)")
        g.add_argument("--no-paper-first", dest="paper_first", action="store_false", default=None,
                       help="do not evaluate the paper's configuration as the first trial")
        g.add_argument("--search-seed", type=int, default=None, help="seed of the TPE sampler (default 0)")
        g.add_argument("--asha", action="store_true", default=None,
                       help="stop unpromising trials early with ASHA (default off)")
        g.add_argument("--asha-grace-period", type=int, default=None,
                       help="evaluations every trial gets before ASHA may stop it (default 1)")
        g.add_argument("--asha-reduction-factor", type=int, default=None,
                       help="ASHA keeps 1/FACTOR of the trials at each rung (default 2)")

    def extra_overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        return {}

    def build(self, args: argparse.Namespace, preset: str, base_flat: dict[str, Any],
              fixed: dict[str, Any]) -> TPE:
        num_trials = self.default_trials if args.num_trials is None else args.num_trials
        if num_trials < 1:
            raise SweepError(f"--num-trials must be at least 1 (got {num_trials})")
        grace = 1 if args.asha_grace_period is None else args.asha_grace_period
        reduction = 2 if args.asha_reduction_factor is None else args.asha_reduction_factor
        if grace < 1:
            raise SweepError(f"--asha-grace-period must be at least 1 (got {grace})")
        if reduction < 2:
            raise SweepError(f"--asha-reduction-factor must be at least 2 (got {reduction})")
        texts = dict(self.space[preset])
        texts.update(_key_values(args.space, "--space", "KEY=SPEC"))
        space = parse_space(texts)
        check_space(space, base_flat)
        both = sorted(set(space) & set(fixed))
        if both:
            raise SweepError(f"{', '.join(both)} both searched (--space) and fixed (--set); pick one")
        paper = base_point(space, base_flat) if args.paper_first is not False else {}
        outside = [k for k, v in paper.items() if not space[k].contains(v)]
        if outside:
            raise SweepError(
                "the paper's configuration is outside the search space for "
                + ", ".join(f"{k}={paper[k]} ({space[k].text()})" for k in outside)
                + "; widen the space or pass --no-paper-first"
            )
        return TPE(
            space={k: s.text() for k, s in space.items()},
            num_trials=num_trials,
            search_seed=0 if args.search_seed is None else args.search_seed,
            paper_point=paper,
            short_names=dict(self.short_names),
            asha_grace_period=grace if args.asha else None,
            asha_reduction_factor=reduction,
        )


def _key_values(items: list[str] | None, flag: str, form: str) -> dict[str, str]:
    from sevlm.config import set_items

    try:
        return set_items(items, flag, form)
    except ValueError as exc:
        raise SweepError(str(exc)) from None


# ------------------------------------------------------------------------------ grid


@dataclass
class Grid(Strategy):
    kind: ClassVar[str] = "grid"
    # Keys of a trial's Tune config.
    VARIANT_KEY: ClassVar[str] = "ablation"
    SEED_KEY: ClassVar[str] = "seed"  # the configuration key itself

    variants: dict[str, dict[str, Any]]  # name -> configuration overrides, in order
    seeds: list[int]
    # Variants that run at only the first N of the seeds (the rest run at all of them).
    seed_counts: dict[str, int] = field(default_factory=dict)

    def variant_seeds(self, name: str) -> list[int]:
        return self.seeds[: self.seed_counts.get(name, len(self.seeds))]

    def points(self) -> list[dict[str, Any]]:
        """The trials, seed by seed: every variant at seed 0 before any at seed 1, so an
        interrupted sweep already holds complete paired seeds."""
        return [{self.VARIANT_KEY: name, self.SEED_KEY: seed}
                for seed in self.seeds for name in self.variants if seed in self.variant_seeds(name)]

    def param_space(self) -> dict[str, Any]:
        from ray import tune

        # The grid names every value; the searcher's points pick the combinations that run.
        return {self.VARIANT_KEY: tune.grid_search(list(self.variants)),
                self.SEED_KEY: tune.grid_search(list(self.seeds))}

    def search_alg(self, metric: str, max_concurrent: int | None = None):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # Tune's own generator, fed the explicit points: each point replaces one sample, so
        # num_samples = the number of points runs exactly them (a rectangular grid cannot
        # give some variants fewer seeds), and its state is saved for --resume as a grid's.
        # It must hold the concurrency itself: Tune's max_concurrent_trials only limits a
        # Searcher, and a grid started all at once deadlocks (every CPU held by waiting
        # trial functions, none left for their training workers).
        return BasicVariantGenerator(points_to_evaluate=self.points(), max_concurrent=max_concurrent or 0)

    def num_samples(self) -> int:
        return len(self.points())

    def total_trials(self) -> int:
        return len(self.points())

    def describe(self) -> str:
        fewer = [f"{n} at {len(self.variant_seeds(n))}" for n in self.variants
                 if len(self.variant_seeds(n)) < len(self.seeds)]
        return f"{len(self.variants)} variants x {len(self.seeds)} seeds" + (f" ({', '.join(fewer)})" if fewer else "")

    def parent_params(self) -> dict[str, Any]:
        params = {"searcher": self.kind, "num_trials": self.total_trials(),
                  "variants": ",".join(self.variants), "seeds": ",".join(map(str, self.seeds))}
        if self.seed_counts:
            params["seed_counts"] = ",".join(f"{n}={c}" for n, c in self.seed_counts.items())
        return {schema.PARENT_PARAM_PREFIX + k: v for k, v in params.items()}

    def parent_tags(self) -> dict[str, str]:
        return {schema.TAG_GRID: json.dumps({"variants": self.variants, "seeds": self.seeds,
                                             "seed_counts": self.seed_counts})}

    def columns(self) -> dict[str, str]:
        return {self.VARIANT_KEY: "variant", self.SEED_KEY: "seed"}

    def point_layers(self) -> dict[str, dict[str, dict[str, Any]]]:
        # SEED_KEY is the configuration's "seed": it varies initialisation, batch order and
        # sampling; the data (synthetic set and split) has its own seeds, so every trial sees
        # the same test paintings.
        return {self.VARIANT_KEY: self.variants}

    def trial_tags(self, config: dict[str, Any]) -> dict[str, str]:
        return {schema.TAG_VARIANT: str(config[self.VARIANT_KEY]), schema.TAG_SEED: str(config[self.SEED_KEY])}

    def probe_points(self) -> list[dict[str, Any]]:
        return [{self.VARIANT_KEY: name, self.SEED_KEY: self.seeds[0]} for name in self.variants]


@dataclass(frozen=True)
class GridFlags:
    """The flags of a variants x seeds sweep, with the defaults its sweep file declares.
    ``quick``: what ``--quick`` runs (a few variants and seeds, and overrides that make
    every trial a few steps long). ``default_seed_counts``: variants that run at fewer
    seeds unless ``--all-seeds`` is given."""

    variants: dict[str, dict[str, Any]]
    default_seeds: int
    quick_variants: tuple[str, ...]
    quick_seeds: int
    quick_overrides: dict[str, Any]
    default_seed_counts: dict[str, int] = field(default_factory=dict)
    defining: ClassVar[tuple[str, ...]] = ("seeds", "variants", "quick", "all_seeds")

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("variants and seeds")
        g.add_argument("--seeds", type=int, default=None,
                       help=f"seeds 0..N-1 for every variant (default {self.default_seeds})")
        g.add_argument("--variants", default=None, metavar="NAME,...",
                       help="run only these variants (default: all of " + ", ".join(self.variants) + ")")
        g.add_argument("--quick", action="store_true", default=None,
                       help=f"a smoke test: {self.quick_seeds} seeds of "
                            + ", ".join(self.quick_variants) + ", a few training steps each")
        if self.default_seed_counts:
            fewer = ", ".join(f"{n} at {c}" for n, c in self.default_seed_counts.items())
            g.add_argument("--all-seeds", action="store_true", default=None,
                           help=f"run every variant at every seed (default: {fewer} seed(s))")

    def extra_overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        return dict(self.quick_overrides) if args.quick else {}

    def build(self, args: argparse.Namespace, preset: str, base_flat: dict[str, Any],
              fixed: dict[str, Any]) -> Grid:
        default_seeds = self.quick_seeds if args.quick else self.default_seeds
        seeds = default_seeds if args.seeds is None else args.seeds
        if seeds < 1:
            raise SweepError(f"--seeds must be at least 1 (got {seeds})")
        if args.variants is None:
            names = list(self.quick_variants if args.quick else self.variants)
        else:
            names = [n.strip() for n in args.variants.split(",") if n.strip()]
            unknown = [n for n in names if n not in self.variants]
            if unknown or not names:
                raise SweepError(f"--variants: unknown variant(s) {', '.join(unknown) or '(none given)'}; "
                                 f"known: {', '.join(self.variants)}")
            names = [n for n in self.variants if n in names]  # the paper's order
        varied = {k for n in names for k in self.variants[n]} | {"seed"}
        both = sorted(varied & set(fixed))
        if both:
            raise SweepError(f"{', '.join(both)} both fixed (--set) and varied by the variants or seeds; "
                             "drop the --set")
        counts = {} if args.quick or getattr(args, "all_seeds", None) else {
            n: c for n, c in self.default_seed_counts.items() if n in names and c < seeds}
        return Grid(variants={n: dict(self.variants[n]) for n in names}, seeds=list(range(seeds)),
                    seed_counts=counts)
