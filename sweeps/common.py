"""What every sweep shares: flags, search-space specs, validation, running, reporting.

A sweep script (``sweeps/alpha_search.py``; later an ablation sweep) declares its default
search space and calls :func:`run_sweep_cli`. Everything is checked before the first trial
starts; a bad flag or an impossible search space ends the command with exit code 2 and a
one-line ``error: ...`` message.

Search-space specs (``--space KEY=SPEC``; KEY is any configuration key, see
``python -m sevlm.train --print-config``):

* ``log:LO:HI``: float, log-uniform (LO > 0);  ``float:LO:HI``: float, uniform;
* ``int:LO:HI``: integer, both ends included;
* ``choice:A,B,...``: categorical (``true``/``false``, numbers and words);
* ``off``: not searched (the value comes from the preset or ``--set``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables import tracking_schema as schema

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
SPEC_FILE = "sevlm_sweep.json"
ASHA_MAX_T = 100_000
PATH_KEYS = (
    "data.artemis_csv",
    "data.contrastive_csv",
    "data.image_dir",
    "data.synthetic_dir",
    "data.feature_cache_dir",
    "vad.path",
)
MAYBE_PATH_KEYS = ("model.image_encoder.pretrained", "model.decoder.name_or_path")
# Bounds that the model itself imposes on some searched parameters.
PARAM_BOUNDS = {"model.emotion_encoder_layers": (0, 6)}
SHORT_NAMES = {
    "model.alpha": "alpha",
    "train.lr_decoder": "lr_dec",
    "train.lr_vad": "lr_vad",
    "model.emotion_encoder_layers": "enc",
    "model.neg_wrong_emotion": "neg!M",
    "model.neg_other_image": "neg!I",
}


class SweepError(ValueError):
    """A bad flag or an impossible search space (reported before any trial starts)."""


# ------------------------------------------------------------------- search space


@dataclass(frozen=True)
class ParamSpec:
    key: str
    kind: str  # "log", "float", "int", "choice"
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def text(self) -> str:
        if self.kind == "choice":
            return "choice:" + ",".join(_format_value(c) for c in self.choices)
        low, high = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
        return f"{self.kind}:{low}:{high}"

    def distribution(self):
        import optuna

        if self.kind == "log":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=True)
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and int(value) != value:
            return False
        return self.low <= value <= self.high


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _parse_value(text: str) -> Any:
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if t.lower() in ("none", "null"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def parse_param_spec(key: str, text: str) -> ParamSpec | None:
    """``log:0.1:10`` -> ParamSpec; ``off`` -> None. Raises SweepError on bad syntax."""
    t = text.strip()
    if t.lower() == "off":
        return None
    kind, _, rest = t.partition(":")
    kind = kind.lower()
    if kind in ("log", "float", "int"):
        parts = rest.split(":")
        if len(parts) != 2:
            raise SweepError(f"--space {key}={text}: expected {kind}:LOW:HIGH")
        try:
            low, high = (int(p) for p in parts) if kind == "int" else (float(p) for p in parts)
        except ValueError:
            raise SweepError(f"--space {key}={text}: LOW and HIGH must be numbers") from None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise SweepError(f"--space {key}={text}: LOW and HIGH must be finite")
        if kind == "int" and low > high:
            raise SweepError(f"--space {key}={text}: empty range (LOW {low} > HIGH {high})")
        if kind != "int" and low >= high:
            raise SweepError(
                f"--space {key}={text}: empty range (LOW {low} >= HIGH {high}); "
                f"use choice:{_format_value(low)} to fix a value"
            )
        if kind == "log" and low <= 0:
            raise SweepError(f"--space {key}={text}: a log range needs LOW > 0")
        return ParamSpec(key, kind, float(low), float(high))
    if kind == "choice":
        values = tuple(_parse_value(v) for v in rest.split(",") if v.strip() != "")
        if not values:
            raise SweepError(f"--space {key}={text}: choice needs at least one value")
        if len(set(map(repr, values))) != len(values):
            raise SweepError(f"--space {key}={text}: repeated choice")
        return ParamSpec(key, "choice", choices=values)
    raise SweepError(f"--space {key}={text}: unknown kind {kind!r}; use log:, float:, int:, choice: or off")


def check_space(space: dict[str, ParamSpec], base_flat: dict[str, Any]) -> None:
    """Parameters must be configuration keys, with a spec matching the key's type."""
    if not space:
        raise SweepError("the search space is empty (every parameter is 'off')")
    for key, spec in space.items():
        if key not in base_flat:
            close = [k for k in base_flat if k.split(".")[-1] == key.split(".")[-1]]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SweepError(f"unknown parameter {key!r} in the search space{hint}")
        current = base_flat[key]
        if isinstance(current, bool):
            if spec.kind != "choice" or not all(isinstance(c, bool) for c in spec.choices):
                raise SweepError(f"{key} is a switch: use choice:true,false (got {spec.text()})")
        elif isinstance(current, int):
            if spec.kind in ("log", "float"):
                raise SweepError(f"{key} is an integer: use int:LOW:HIGH or choice: (got {spec.text()})")
            if spec.kind == "choice" and not all(isinstance(c, int) and not isinstance(c, bool) for c in spec.choices):
                raise SweepError(f"{key} is an integer: every choice must be an integer")
        elif isinstance(current, float):
            if spec.kind == "choice" and not all(
                isinstance(c, (int, float)) and not isinstance(c, bool) for c in spec.choices
            ):
                raise SweepError(f"{key} is a number: every choice must be a number")
        elif isinstance(current, str) or current is None:
            if spec.kind != "choice":
                raise SweepError(f"{key} is not numeric: use choice:A,B,...")
        else:
            raise SweepError(f"{key} cannot be searched (value {current!r})")
        bounds = PARAM_BOUNDS.get(key)
        if bounds is not None:
            values = spec.choices if spec.kind == "choice" else (spec.low, spec.high)
            if any(v < bounds[0] or v > bounds[1] for v in values):
                raise SweepError(f"{key} must stay within {bounds[0]}..{bounds[1]} (got {spec.text()})")


def optuna_space(space: dict[str, ParamSpec]) -> dict[str, Any]:
    return {key: spec.distribution() for key, spec in space.items()}


def base_point(space: dict[str, ParamSpec], preset_flat: dict[str, Any]) -> dict[str, Any]:
    """The preset's own values of the searched parameters."""
    point = {}
    for key, spec in space.items():
        value = preset_flat[key]
        if spec.kind in ("log", "float") and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        point[key] = value
    return point


# ------------------------------------------------------------------------- settings


@dataclass
class SweepSpec:
    """Every setting of one sweep; saved next to Tune's state, reloaded by ``--resume``."""

    kind: str
    name: str
    storage_path: str
    experiment_dir: str
    tracking_uri: str
    experiment: str
    preset: str
    overrides: dict[str, Any]
    space: dict[str, str]  # key -> spec text
    num_trials: int
    concurrency: int
    metric: str
    mode: str
    asha: bool
    asha_grace_period: int
    asha_reduction_factor: int
    search_seed: int
    paper_first: bool
    paper_point: dict[str, Any]
    settings: dict[str, Any]  # trainables.ray_trainable.TrialSettings
    trial_retries: int
    created: str = ""
    argv: list[str] = field(default_factory=list)

    def parsed_space(self) -> dict[str, ParamSpec]:
        out = {}
        for key, text in self.space.items():
            spec = parse_param_spec(key, text)
            if spec is not None:
                out[key] = spec
        return out

    def save(self) -> Path:
        path = Path(self.experiment_dir) / SPEC_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, default=str))
        return path

    @classmethod
    def load(cls, experiment_dir: str | Path) -> SweepSpec:
        data = json.loads((Path(experiment_dir) / SPEC_FILE).read_text())
        return cls(**data)

    def parent_params(self) -> dict[str, Any]:
        p = schema.PARENT_PARAM_PREFIX
        out: dict[str, Any] = {
            p + "kind": self.kind,
            p + "num_trials": self.num_trials,
            p + "concurrency": self.concurrency,
            p + "metric": self.metric,
            p + "mode": self.mode,
            p + "searcher": "optuna_tpe",
            p + "search_seed": self.search_seed,
            p + "scheduler": "asha" if self.asha else "fifo",
            p + "preset": self.preset,
            p + "paper_first": self.paper_first,
            p + "trial_retries": self.trial_retries,
            p + "worker_retries": self.settings.get("max_failures"),
            p + "use_gpu": self.settings.get("use_gpu"),
            p + "storage_path": self.storage_path,
        }
        if self.asha:
            out[p + "asha_grace_period"] = self.asha_grace_period
            out[p + "asha_reduction_factor"] = self.asha_reduction_factor
        for key, text in self.space.items():
            out[schema.PARENT_SPACE_PREFIX + key] = text
        for key, value in self.overrides.items():
            out[schema.PARENT_OVERRIDE_PREFIX + key] = value
        return out


# ---------------------------------------------------------------------------- flags


def add_common_flags(p: argparse.ArgumentParser, *, default_trials: int, kind: str,
                     default_metric: dict[str, str] | None = None) -> None:
    """Flags shared by every sweep. Defaults of sweep-defining flags are None so that
    ``--resume`` can tell which ones were given explicitly."""
    g = p.add_argument_group("sweep")
    g.add_argument("--num-trials", "--num-samples", dest="num_trials", type=int, default=None,
                   help=f"number of trials (default {default_trials})")
    g.add_argument("--concurrency", type=int, default=None,
                   help="trials run at the same time (default: as many as the cluster fits: "
                        "one per GPU, or one per CPU on a CPU-only cluster)")
    defaults = ", ".join(f"{m} for --preset {p}" for p, m in (default_metric or {}).items()) or "val/bleu4"
    g.add_argument("--metric", default=None,
                   help=f"validation metric to optimise (default {defaults}; one of "
                        + ", ".join(schema.OPTIMIZABLE_METRICS) + ")")
    g.add_argument("--asha", action="store_true", default=None,
                   help="stop unpromising trials early with ASHA (default off)")
    g.add_argument("--asha-grace-period", type=int, default=None,
                   help="evaluations every trial gets before ASHA may stop it (default 1)")
    g.add_argument("--asha-reduction-factor", type=int, default=None,
                   help="ASHA keeps 1/FACTOR of the trials at each rung (default 2)")
    g.add_argument("--space", action="append", default=None, metavar="KEY=SPEC",
                   help="change the search space: log:LO:HI, float:LO:HI, int:LO:HI, "
                        "choice:A,B,..., or off (repeatable)")
    g.add_argument("--no-paper-first", dest="paper_first", action="store_false", default=None,
                   help="do not evaluate the paper's configuration as the first trial")
    g.add_argument("--search-seed", type=int, default=None, help="seed of the TPE sampler (default 0)")
    g.add_argument("--name", default=None,
                   help=f"sweep name = Ray Tune experiment name (default {kind}-<date>-<time>)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep (--name, else the latest one in --storage) "
                        "without re-running its finished trials")

    g = p.add_argument_group("configuration")
    g.add_argument("--preset", choices=["tiny", "paper"], default=None,
                   help="tiny: offline CPU model on synthetic data (default); paper: the "
                        "paper's model and hyper-parameters")
    g.add_argument("--dataset", choices=["synthetic", "artemis_v1", "artemis_v2"], default=None,
                   help="dataset (default: the preset's, synthetic)")
    g.add_argument("--artemis-csv", default=None, help="ArtEmis CSV (artemis_dataset_release_v0.csv)")
    g.add_argument("--contrastive-csv", default=None, help="ArtEmis v2 Contrastive.csv")
    g.add_argument("--image-dir", default=None, help="WikiArt images: <dir>/<art_style>/<painting>.jpg")
    g.add_argument("--synthetic-dir", default=None, help="where the synthetic dataset is generated")
    g.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="fix a configuration value for every trial (repeatable), "
                        "e.g. --set train.epochs=3")

    g = p.add_argument_group("cluster and storage")
    g.add_argument("--address", default=None,
                   help="join a running Ray cluster (e.g. auto, or ray://head:10001); "
                        "default: start a local one")
    g.add_argument("--storage", "--storage-path", dest="storage", default=None,
                   help="Ray storage for trial state and checkpoints (default ./ray_results; "
                        "on a multi-node cluster a shared path or bucket)")
    g.add_argument("--gpu", choices=["auto", "on", "off"], default=None,
                   help="one GPU per trial: auto = when the cluster has GPUs (default)")
    g.add_argument("--cpus-per-trial", type=float, default=None,
                   help="CPUs per trial (default: the cluster's CPUs / concurrency on CPU-only "
                        "clusters, at least 1)")
    g.add_argument("--worker-retries", type=int, default=None,
                   help="worker failures Ray Train recovers from per trial, resuming from the "
                        "last checkpoint (default 2)")
    g.add_argument("--trial-retries", type=int, default=None,
                   help="times Tune restarts a failed trial, resuming from its last checkpoint "
                        "(default 1)")
    g.add_argument("--keep-checkpoints", type=int, default=None,
                   help="best checkpoints kept per trial, by --metric (default 2; the latest "
                        "is always kept)")

    g = p.add_argument_group("MLflow")
    g.add_argument("--tracking-uri", "--mlflow-uri", dest="tracking_uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<current dir>/mlflow.db)")
    g.add_argument("--experiment", default=None,
                   help=f"MLflow experiment (default {schema.DEFAULT_EXPERIMENT})")

    g = p.add_argument_group("output")
    g.add_argument("--progress-interval", type=float, default=30.0,
                   help="seconds between progress tables (default 30)")
    g.add_argument("--verbose", action="store_true", help="show Ray's and the workers' logs")


SWEEP_DEFINING = (
    "num_trials", "concurrency", "metric", "asha", "asha_grace_period", "asha_reduction_factor",
    "space", "paper_first", "search_seed", "preset", "dataset", "artemis_csv",
    "contrastive_csv", "image_dir", "synthetic_dir", "set", "gpu", "cpus_per_trial",
    "worker_retries", "trial_retries", "keep_checkpoints", "experiment",
)


def _parse_sets(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--set {item}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _parse_spaces(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--space {item}: expected KEY=SPEC")
        out[key.strip()] = value.strip()
    return out


def _absolute_paths(flat: dict[str, Any], overrides: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Relative paths are resolved against the current directory (trials run elsewhere)."""
    out = dict(overrides)
    for key in PATH_KEYS:
        value = out.get(key, flat.get(key))
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            out[key] = str((cwd / value).resolve())
    for key in MAYBE_PATH_KEYS:
        value = out.get(key, flat.get(key))
        if isinstance(value, str) and value and not os.path.isabs(value) and (cwd / value).exists():
            out[key] = str((cwd / value).resolve())
    return out


def default_name(kind: str) -> str:
    return f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _storage_root(flag: str | None, cwd: Path) -> str:
    value = flag or "ray_results"
    if "://" in value:
        return value.rstrip("/")
    return str((cwd / value).resolve())


def build_spec(
    args: argparse.Namespace,
    *,
    kind: str,
    default_space: dict[str, dict[str, str]],
    default_trials: int,
    default_overrides: dict[str, dict[str, Any]] | None = None,
    default_metric: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> SweepSpec:
    """Validate the flags (everything that does not need the cluster) into a SweepSpec."""
    from sevlm.config import apply_overrides, preset, to_flat_dict

    from trainables import mlflow_tracking
    from trainables import ray_trainable as rt

    cwd = Path(cwd or os.getcwd())
    preset_name = args.preset or "tiny"
    num_trials = default_trials if args.num_trials is None else args.num_trials
    if num_trials < 1:
        raise SweepError(f"--num-trials must be at least 1 (got {num_trials})")
    if args.concurrency is not None and args.concurrency < 1:
        raise SweepError(f"--concurrency must be at least 1 (got {args.concurrency})")
    metric = args.metric or (default_metric or {}).get(preset_name, "val/bleu4")
    if metric not in schema.OPTIMIZABLE_METRICS:
        raise SweepError(
            f"unknown metric {metric!r}; choose one of {', '.join(schema.OPTIMIZABLE_METRICS)}"
        )
    mode = "max"  # every validation metric of the loop is higher-is-better
    grace = 1 if args.asha_grace_period is None else args.asha_grace_period
    reduction = 2 if args.asha_reduction_factor is None else args.asha_reduction_factor
    if grace < 1:
        raise SweepError(f"--asha-grace-period must be at least 1 (got {grace})")
    if reduction < 2:
        raise SweepError(f"--asha-reduction-factor must be at least 2 (got {reduction})")
    worker_retries = 2 if args.worker_retries is None else args.worker_retries
    trial_retries = 1 if args.trial_retries is None else args.trial_retries
    if worker_retries < -1 or trial_retries < -1:
        raise SweepError("--worker-retries and --trial-retries must be >= 0 (or -1 = unlimited)")
    keep = 2 if args.keep_checkpoints is None else args.keep_checkpoints
    if keep < 1:
        raise SweepError(f"--keep-checkpoints must be at least 1 (got {keep})")
    if args.cpus_per_trial is not None and args.cpus_per_trial < 0.2:
        raise SweepError(f"--cpus-per-trial must be at least 0.2 (got {args.cpus_per_trial})")

    # Configuration: preset, sweep defaults, dataset flags, --set.
    base = preset(preset_name)
    base_flat = to_flat_dict(base)
    overrides: dict[str, Any] = dict((default_overrides or {}).get(preset_name, {}))
    for flag, key in (("dataset", "data.dataset"), ("artemis_csv", "data.artemis_csv"),
                      ("contrastive_csv", "data.contrastive_csv"), ("image_dir", "data.image_dir"),
                      ("synthetic_dir", "data.synthetic_dir")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    overrides.update(_parse_sets(args.set))
    try:
        cfg = apply_overrides(base, overrides)
    except (ValueError, TypeError) as exc:
        raise SweepError(f"--set: {exc}") from None
    flat = to_flat_dict(cfg)
    overrides = _absolute_paths(flat, overrides, cwd)
    cfg = apply_overrides(base, overrides)
    flat = to_flat_dict(cfg)
    _check_dataset(flat)
    if metric == "val/meteor" and not flat.get("eval.use_meteor", True):
        raise SweepError("--metric val/meteor needs METEOR: drop --set eval.use_meteor=false")

    # Search space.
    space_text = dict(default_space.get(preset_name, default_space.get("*", {})))
    space_text.update(_parse_spaces(args.space))
    space: dict[str, ParamSpec] = {}
    for key, text in space_text.items():
        spec = parse_param_spec(key, text)
        if spec is not None:
            space[key] = spec
    check_space(space, base_flat)
    fixed = sorted(set(space) & set(overrides))
    if fixed:
        raise SweepError(f"{', '.join(fixed)} both searched (--space) and fixed (--set); pick one")

    paper_first = True if args.paper_first is None else args.paper_first
    paper_point = base_point(space, base_flat)
    if paper_first:
        outside = [k for k, v in paper_point.items() if not space[k].contains(v)]
        if outside:
            raise SweepError(
                "the paper's configuration is outside the search space for "
                + ", ".join(f"{k}={paper_point[k]} ({space[k].text()})" for k in outside)
                + "; widen the space or pass --no-paper-first"
            )
    # Every trial's configuration must be buildable: try the corners of the space.
    settings_probe = rt.TrialSettings(sweep_name="probe", storage_path="/tmp", preset=preset_name,
                                      overrides=overrides, metric=metric, mode=mode)
    for point in _corners(space, paper_point):
        try:
            rt.trial_config(settings_probe, point)
        except (ValueError, TypeError) as exc:
            raise SweepError(f"search space gives an invalid configuration {point}: {exc}") from None

    try:
        tracking_uri = mlflow_tracking.resolve_tracking_uri(args.tracking_uri, cwd)
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    db = mlflow_tracking.sqlite_path(tracking_uri)
    if db is not None and not db.parent.exists():
        raise SweepError(f"the directory of the MLflow database {db} does not exist")

    storage = _storage_root(args.storage, cwd)
    name = args.name or default_name(kind)
    if "/" in name or name in (".", ".."):
        raise SweepError(f"--name {name!r}: must be a plain name")
    experiment_dir = f"{storage}/{name}"
    if "://" not in storage and (Path(experiment_dir) / SPEC_FILE).exists():
        raise SweepError(
            f"a sweep named {name!r} already exists in {storage}; continue it with "
            f"--resume --name {name}, or choose another --name"
        )
    output_root = overrides.pop("output_dir", None)
    if output_root is not None and "://" not in str(output_root):
        output_root = str((cwd / str(output_root)).resolve())
    settings = rt.TrialSettings(
        sweep_name=name,
        storage_path=storage,
        output_root=output_root,
        preset=preset_name,
        overrides=overrides,
        metric=metric,
        mode=mode,
        max_failures=worker_retries,
        keep_checkpoints=keep,
    )
    return SweepSpec(
        kind=kind,
        name=name,
        storage_path=storage,
        experiment_dir=experiment_dir,
        tracking_uri=tracking_uri,
        experiment=args.experiment or schema.DEFAULT_EXPERIMENT,
        preset=preset_name,
        overrides=overrides,
        space={k: s.text() for k, s in space.items()},
        num_trials=num_trials,
        concurrency=args.concurrency or 0,  # 0 = decided once the cluster is known
        metric=metric,
        mode=mode,
        asha=bool(args.asha),
        asha_grace_period=grace,
        asha_reduction_factor=reduction,
        search_seed=0 if args.search_seed is None else args.search_seed,
        paper_first=paper_first,
        paper_point=paper_point if paper_first else {},
        settings=settings.to_dict(),
        trial_retries=trial_retries,
        created=datetime.now().isoformat(timespec="seconds"),
    )


def _corners(space: dict[str, ParamSpec], paper: dict[str, Any]) -> list[dict[str, Any]]:
    points = [dict(paper)]
    low = {k: (s.choices[0] if s.kind == "choice" else (int(s.low) if s.kind == "int" else s.low)) for k, s in space.items()}
    high = {k: (s.choices[-1] if s.kind == "choice" else (int(s.high) if s.kind == "int" else s.high)) for k, s in space.items()}
    points += [low, high]
    return points


def _check_dataset(flat: dict[str, Any]) -> None:
    dataset = flat.get("data.dataset")
    if dataset in ("artemis_v1", "artemis_v2"):
        needed = ["data.artemis_csv", "data.image_dir"]
        if dataset == "artemis_v2":
            needed.append("data.contrastive_csv")
        for key in needed:
            value = flat.get(key)
            flag = "--" + key.split(".", 1)[1].replace("_", "-")
            if not value:
                raise SweepError(f"--dataset {dataset} needs {flag}")
            if "://" not in str(value) and not Path(value).exists():
                raise SweepError(f"{flag} {value}: no such file or directory")
    for key in ("data.artemis_csv", "data.contrastive_csv", "data.image_dir", "vad.path"):
        value = flat.get(key)
        if value and "://" not in str(value) and not Path(value).exists():
            flag = "--" + key.split(".", 1)[1].replace("_", "-")
            raise SweepError(f"{flag if key != 'vad.path' else '--set vad.path'} {value}: no such file or directory")


# -------------------------------------------------------------------------- cluster


def cluster_capacity(resources: dict[str, float], use_gpu: bool, cpus_per_trial: float | None) -> int:
    from trainables.ray_trainable import TRIAL_FN_CPUS

    cpus = float(resources.get("CPU", 0))
    if use_gpu:
        gpus = int(resources.get("GPU", 0) + 1e-9)
        worker_cpus = (cpus_per_trial - TRIAL_FN_CPUS) if cpus_per_trial else 0.0
        by_cpu = int((cpus + 1e-9) // (TRIAL_FN_CPUS + worker_cpus)) if cpus else 0
        return min(gpus, by_cpu)
    per_trial = cpus_per_trial or 1.0
    return int((cpus + 1e-9) // per_trial)


def local_resources(gpu: str) -> dict[str, float]:
    """What a local ``ray.init()`` would detect (checked before starting Ray)."""
    res = {"CPU": float(os.cpu_count() or 1)}
    if gpu != "off":
        try:
            import torch

            if torch.cuda.is_available():
                res["GPU"] = float(torch.cuda.device_count())
        except Exception:  # noqa: BLE001
            pass
    return res


def decide_resources(spec: SweepSpec, resources: dict[str, float], gpu_flag: str | None,
                     cpus_per_trial: float | None, explicit_concurrency: bool) -> None:
    """Fill in use_gpu, CPUs per worker and concurrency; raise if the cluster cannot run it."""
    from trainables.ray_trainable import TRIAL_FN_CPUS

    gpu_flag = gpu_flag or "auto"
    has_gpu = resources.get("GPU", 0) >= 1
    if gpu_flag == "on" and not has_gpu:
        raise SweepError("--gpu on, but the cluster has no GPU")
    use_gpu = has_gpu if gpu_flag == "auto" else gpu_flag == "on"
    cpus = float(resources.get("CPU", 0))
    if not use_gpu and cpus < 1:
        raise SweepError(f"the cluster has {cpus:g} CPUs; a CPU trial needs at least 1")
    if spec.concurrency:
        concurrency = spec.concurrency
    else:
        concurrency = cluster_capacity(resources, use_gpu, cpus_per_trial or (None if use_gpu else 1.0))
        concurrency = max(1, min(concurrency, spec.num_trials))
    if use_gpu:
        per_trial = cpus_per_trial or 0.0
    else:
        per_trial = cpus_per_trial or max(1.0, math.floor(cpus / concurrency))
    capacity = cluster_capacity(resources, use_gpu, per_trial if per_trial else None)
    if concurrency > capacity:
        what = (f"{int(resources.get('GPU', 0))} GPU(s), one per trial" if use_gpu
                else f"{cpus:g} CPUs, {per_trial:g} per trial")
        raise SweepError(
            f"--concurrency {concurrency} is more than the cluster can run at once "
            f"({capacity}: {what})"
        )
    if explicit_concurrency and concurrency > spec.num_trials:
        concurrency = spec.num_trials
    spec.concurrency = concurrency
    spec.settings["use_gpu"] = use_gpu
    spec.settings["cpus_per_worker"] = round(max(per_trial - TRIAL_FN_CPUS, 0.0), 3) if per_trial else 0.0


# ------------------------------------------------------------------------- progress


def _short(key: str) -> str:
    return SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def make_progress_callback(spec: SweepSpec, interval: float, stream=None):
    """A ``ray.tune.Callback`` printing the progress table (see :class:`ProgressTable`)."""
    return ProgressTable(name=spec.name, num_trials=spec.num_trials, params=list(spec.space),
                         metric=spec.metric, mode=spec.mode, interval=interval, stream=stream)


class ProgressTable(Callback):
    """Prints a table of every trial every ``interval`` seconds and when one ends."""

    def __init__(self, name, num_trials, params, metric, mode, interval, stream=None):
        self.name = name
        self.num_trials = num_trials
        self.params = params
        self.metric = metric
        self.mode = mode
        self.interval = interval
        self.stream = stream
        self.last = 0.0
        self.start = time.monotonic()
        self.best: dict[str, float] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["stream"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.start = time.monotonic()
        self.last = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from trainables.ray_trainable import KEY_FINAL

        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value) and result.get(KEY_FINAL) != 1.0:
            prev = self.best.get(trial.trial_id)
            better = max if self.mode == "max" else min
            self.best[trial.trial_id] = value if prev is None else better(prev, value)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.print(trials, f"trial {trial.trial_id} ended", {trial.trial_id: "TERMINATED"})

    def on_trial_error(self, iteration, trials, trial, **info):
        self.print(trials, f"trial {trial.trial_id} failed", {trial.trial_id: "ERROR"})

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last >= self.interval:
            self.print(trials)

    def on_experiment_end(self, trials, **info):
        self.print(trials, "sweep ended")

    def print(self, trials, note: str = "", status: dict[str, str] | None = None):
        self.last = time.monotonic()
        elapsed = time.monotonic() - self.start
        status = {t.trial_id: (status or {}).get(t.trial_id, t.status) for t in trials}
        counts: dict[str, int] = {}
        for t in trials:
            counts[status[t.trial_id]] = counts.get(status[t.trial_id], 0) + 1
        head = f"== {self.name}: {len(trials)}/{self.num_trials} trials (" + ", ".join(
            f"{n} {s.lower()}" for s, n in sorted(counts.items())
        ) + f") | {elapsed / 60:.1f} min" + (f" | {note}" if note else "")
        header = ["trial", "status"] + [_short(k) for k in self.params] + [
            "epoch", "step", self.metric, "best"]
        rows = []
        for t in trials:
            r = t.last_result or {}
            rows.append(
                [t.trial_id, status[t.trial_id]]
                + [_fmt(t.config.get(k)) for k in self.params]
                + [_fmt(r.get("epoch")), _fmt(r.get("step")), _fmt(r.get(self.metric)),
                   _fmt(self.best.get(t.trial_id))]
            )
        print(head + "\n" + format_table(rows, header) + "\n", file=self.stream or sys.stdout, flush=True)



# ---------------------------------------------------------------------------- running


def find_latest_sweep(storage: str, kind: str) -> str | None:
    root = Path(storage)
    if not root.is_dir():
        return None
    candidates = [d for d in root.iterdir() if (d / SPEC_FILE).is_file()]
    candidates = [d for d in candidates if json.loads((d / SPEC_FILE).read_text()).get("kind") == kind]
    if not candidates:
        return None
    return str(max(candidates, key=lambda d: (d / SPEC_FILE).stat().st_mtime))


def resume_spec(args: argparse.Namespace, kind: str, cwd: Path) -> SweepSpec:
    storage = _storage_root(args.storage, cwd)
    if args.name:
        experiment_dir = f"{storage}/{args.name}"
    else:
        experiment_dir = find_latest_sweep(storage, kind)
        if experiment_dir is None:
            raise SweepError(f"--resume: no {kind} sweep in {storage} (pass --name and --storage)")
    if not (Path(experiment_dir) / SPEC_FILE).is_file():
        raise SweepError(f"--resume: no sweep {Path(experiment_dir).name!r} in {storage}")
    spec = SweepSpec.load(experiment_dir)
    explicit = [f for f in SWEEP_DEFINING if getattr(args, f, None) is not None]
    if explicit:
        raise SweepError(
            "--resume continues a sweep with its saved settings; drop "
            + ", ".join("--" + f.replace("_", "-") for f in explicit)
        )
    if args.tracking_uri:
        from trainables import mlflow_tracking

        uri = mlflow_tracking.resolve_tracking_uri(args.tracking_uri, cwd)
        if uri != spec.tracking_uri:
            raise SweepError(
                f"--resume: this sweep logs to {spec.tracking_uri}; drop --tracking-uri {args.tracking_uri}"
            )
    from ray import tune

    if not tune.Tuner.can_restore(experiment_dir):
        raise SweepError(f"--resume: {experiment_dir} holds no Ray Tune state to resume")
    return spec


def tpe_sampler(num_trials: int, seed: int | None):
    """TPE sized for small sweeps. Optuna's default of 10 random start-up trials would turn a
    6-8 trial sweep into a random search, so TPE starts modelling after half the trials (at
    least 3, at most 10). The liar keeps concurrent trials from being handed the same point;
    multivariate TPE models α and the learning rates jointly."""
    import optuna

    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=min(10, max(3, num_trials // 2)),
        multivariate=True,
        constant_liar=True,
    )


def build_tuner(spec: SweepSpec, progress_interval: float):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from trainables import mlflow_tracking
    from trainables import ray_trainable as rt

    settings = rt.TrialSettings.from_dict(spec.settings)
    space = spec.parsed_space()
    searcher = OptunaSearch(
        space=optuna_space(space),
        metric=spec.metric,
        mode=spec.mode,
        points_to_evaluate=[dict(spec.paper_point)] if spec.paper_first and spec.paper_point else None,
        sampler=tpe_sampler(spec.num_trials, spec.search_seed),
    )
    scheduler = None
    if spec.asha:
        # time_attr: evaluations reported so far. max_t must never be reached (ASHA stops a
        # trial there, before its final test report): the runs end by themselves.
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric=spec.metric,
            mode=spec.mode,
            max_t=ASHA_MAX_T,
            grace_period=spec.asha_grace_period,
            reduction_factor=spec.asha_reduction_factor,
        )
    mlflow_cb = mlflow_tracking.MlflowSweepCallback(
        tracking_uri=spec.tracking_uri,
        experiment_name=spec.experiment,
        sweep_name=spec.name,
        settings=spec.settings,
        sweep_kind=spec.kind,
        sweep_path=spec.experiment_dir,
        parent_params=spec.parent_params(),
        parent_tags={schema.TAG_SEARCH_SPACE: json.dumps(spec.space)},
        paper_point=spec.paper_point,
        spec=dataclasses.asdict(spec),
    )
    progress = make_progress_callback(spec, progress_interval)
    return tune.Tuner(
        rt.make_trainable(settings),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=spec.num_trials,
            max_concurrent_trials=spec.concurrency,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage_path,
            callbacks=[mlflow_cb, progress, rt.PlacementGroupReaper(spec.name)],
            failure_config=tune.FailureConfig(max_failures=spec.trial_retries),
            verbose=0,
        ),
    )


def print_summary(spec: SweepSpec, outcome: dict[str, Any], stream=None) -> None:
    from trainables import mlflow_tracking

    out = stream or sys.stdout
    counts = outcome.get("counts", {})
    print(f"Sweep {spec.name}: {counts.get('finished', 0)} finished, {counts.get('failed', 0)} failed, "
          f"{counts.get('killed', 0)} stopped early or interrupted (of {counts.get('total', 0)} trials).",
          file=out)
    best = outcome.get("best")
    if best:
        print(f"\nBest configuration ({spec.metric} = {_fmt(best['metrics'].get(spec.metric))}, "
              f"trial {best['trial_id']}, MLflow run {best.get('run_id')}):", file=out)
        for key in spec.space:
            print(f"  {key} = {best['config'].get(key)!r}", file=out)
        print("Its metrics:", file=out)
        for key, value in sorted(best["metrics"].items()):
            print(f"  {key} = {_fmt(value)}", file=out)
    else:
        print("\nNo trial produced a value of " + spec.metric + ".", file=out)
    print("\nBrowse every trial in MLflow (experiment "
          f"{spec.experiment!r}, parent run {spec.name!r}):", file=out)
    print("  " + mlflow_tracking.ui_command(spec.tracking_uri), file=out)
    if outcome.get("experiment_id"):
        url = mlflow_tracking.ui_url(spec.tracking_uri, outcome["experiment_id"], outcome.get("parent_run_id"))
        print(f"  then open {url}", file=out)
    out.flush()


def run_sweep_cli(
    argv: list[str] | None,
    *,
    kind: str,
    description: str,
    default_space: dict[str, dict[str, str]],
    default_trials: int,
    default_overrides: dict[str, dict[str, Any]] | None = None,
    default_metric: dict[str, str] | None = None,
    epilog: str | None = None,
) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python sweeps/{kind}.py", description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(parser, default_trials=default_trials, kind=kind, default_metric=default_metric)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    cwd = Path(os.getcwd())
    try:
        if args.resume:
            spec = resume_spec(args, kind, cwd)
        else:
            spec = build_spec(args, kind=kind, default_space=default_space,
                              default_trials=default_trials, default_overrides=default_overrides,
                              default_metric=default_metric, cwd=cwd)
            if args.address is None:
                decide_resources(spec, local_resources(args.gpu or "auto"), args.gpu,
                                 args.cpus_per_trial, args.concurrency is not None)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _run(spec, args)


def check_tracking(uri: str) -> None:
    """Open the tracking store once (creates a new SQLite file); a clear error if it fails."""
    from trainables.mlflow_tracking import open_tracking_store

    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        open_tracking_store(uri)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"cannot use the MLflow tracking store {uri}: {first[:300]}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run(spec: SweepSpec, args: argparse.Namespace) -> int:
    import logging

    import ray

    try:
        check_tracking(spec.tracking_uri)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.address and "://" not in spec.storage_path:
        print(f"note: on a multi-node cluster every node must see {spec.storage_path} "
              "(shared storage: NFS or a bucket, see --storage)", file=sys.stderr)
    started_ray = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        ray.init(
            address=args.address,
            include_dashboard=False,
            log_to_driver=bool(args.verbose),
            logging_level=logging.INFO if args.verbose else logging.WARNING,
        )
        started_ray = True
    try:
        try:
            if not args.resume:
                decide_resources(spec, ray.cluster_resources(), args.gpu, args.cpus_per_trial,
                                 args.concurrency is not None)
        except SweepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return _fit(spec, args)
    finally:
        if started_ray:
            ray.shutdown()


def _fit(spec: SweepSpec, args: argparse.Namespace) -> int:
    import warnings

    import optuna
    from ray import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A trial restarted by Tune reports its iterations again; Optuna ignores the repeats.
    warnings.filterwarnings("ignore", message="The reported value is ignored because this")

    from trainables import mlflow_tracking
    from trainables import ray_trainable as rt

    out = sys.stdout
    if args.resume:
        print(f"Resuming sweep {spec.name} from {spec.experiment_dir}", file=out, flush=True)
        tuner = tune.Tuner.restore(
            spec.experiment_dir,
            trainable=rt.make_trainable(rt.TrialSettings.from_dict(spec.settings)),
            resume_unfinished=True,
            resume_errored=True,
        )
    else:
        spec.argv = list(sys.argv[1:])
        spec.save()
        device = "one GPU" if spec.settings.get("use_gpu") else f"{spec.settings.get('cpus_per_worker', 0) + rt.TRIAL_FN_CPUS:g} CPU"
        print(
            f"Sweep {spec.name}: {spec.num_trials} trials, {spec.concurrency} at a time, {device} per trial, "
            f"optimising {spec.metric} ({spec.mode}){' with ASHA' if spec.asha else ''}; "
            f"preset {spec.preset}; MLflow {spec.tracking_uri}; Ray storage {spec.experiment_dir}",
            file=out, flush=True,
        )
        tuner = build_tuner(spec, args.progress_interval)
    tuner.fit()
    callback = mlflow_tracking.active_callback(spec.name)
    outcome = callback.outcome if callback is not None else {}
    print_summary(spec, outcome, out)
    if outcome.get("interrupted"):
        cmd = f"python sweeps/{spec.kind}.py --resume --name {spec.name} --storage {spec.storage_path}"
        if args.address:
            cmd += f" --address {args.address}"
        print(f"\nThe sweep was interrupted; continue it with:\n  {cmd}", file=out, flush=True)
        return EXIT_INTERRUPTED
    counts = outcome.get("counts", {})
    if counts and counts.get("finished", 0) == 0 and counts.get("failed", 0) > 0:
        return EXIT_FAILED
    return EXIT_OK
