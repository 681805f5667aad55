"""Every setting of one sweep (:class:`SweepSpec`), checked before anything starts.

``build_spec`` turns the flags into a spec, or raises SweepError with a one-line message:
unknown keys, missing data files, an impossible strategy, a configuration the model
refuses (``sevlm.config.compose`` of every point the strategy probes), an unusable
tracking store. The spec holds the sweep's configuration composed once (its trial
settings' ``base``); a trial is that base plus its point. The spec is saved next to Tune's
state; ``--resume`` reloads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sweeps import SweepError
from sweeps.strategies import Strategy, strategy_from_dict
from trainables import mlflow_store
from trainables import tracking_schema as schema
from trainables.settings import TrialSettings

SPEC_FILE = "sevlm_sweep.json"
# The tiny preset's short runs leave BLEU-4 near 0 on its small validation split, which
# would make every trial tie: its sweeps optimise ROUGE-L unless --metric says otherwise.
DEFAULT_METRIC = {"tiny": "val/rouge_l", "paper": "val/bleu4"}
# Built once and shared by every trial: on a cluster (--address) they default to folders
# under --storage, which every node mounts, instead of each node's copy of the project.
CLUSTER_CACHES = {
    "data.feature_cache_dir": "features",
    "data.ea_classifier_dir": "ea_classifier",
    "data.synthetic_dir": "synthetic",
}
DATASET_FLAGS = {
    "dataset": "data.dataset",
    "artemis_csv": "data.artemis_csv",
    "contrastive_csv": "data.contrastive_csv",
    "image_dir": "data.image_dir",
    "synthetic_dir": "data.synthetic_dir",
}


@dataclass
class SweepSpec:
    """Every setting of one sweep; saved next to Tune's state, reloaded by ``--resume``."""

    kind: str  # the sweep file's name: alpha_search, ablations
    name: str
    storage_path: str
    experiment_dir: str
    tracking_uri: str
    experiment: str
    preset: str
    overrides: dict[str, Any]  # what the sweep fixes beyond the preset, as parsed (params sweep.set.*)
    metric: str
    strategy: dict[str, Any]  # Strategy.to_dict()
    settings: dict[str, Any]  # TrialSettings.to_dict()
    concurrency: int  # 0 until the cluster is known
    trial_retries: int
    created: str = ""
    argv: list[str] = field(default_factory=list)

    @property
    def plan(self) -> Strategy:
        return strategy_from_dict(self.strategy)

    @property
    def trial_settings(self) -> TrialSettings:
        return TrialSettings.from_dict(self.settings)

    def save(self) -> Path:
        path = Path(self.experiment_dir) / SPEC_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, default=str))
        return path

    @classmethod
    def load(cls, experiment_dir: str | Path) -> SweepSpec:
        return cls(**json.loads((Path(experiment_dir) / SPEC_FILE).read_text()))

    def parent_params(self) -> dict[str, Any]:
        settings = self.trial_settings
        p = schema.PARENT_PARAM_PREFIX
        out: dict[str, Any] = {
            p + "kind": self.kind,
            p + "concurrency": self.concurrency,
            p + "metric": self.metric,
            p + "preset": self.preset,
            p + "trial_retries": self.trial_retries,
            p + "worker_retries": settings.max_failures,
            p + "use_gpu": settings.use_gpu,
            p + "storage_path": self.storage_path,
        }
        out.update(self.plan.parent_params())
        out.update({schema.PARENT_OVERRIDE_PREFIX + k: v for k, v in self.overrides.items()})
        return out


def build_spec(
    args: argparse.Namespace,
    *,
    kind: str,
    strategy_flags,
    default_overrides: dict[str, dict[str, Any]],
    default_metric: dict[str, str],
    cwd: Path,
) -> SweepSpec:
    """Validate the flags (everything that does not need the cluster) into a SweepSpec."""
    from sevlm.config import MAYBE_PATH_KEYS, PATH_KEYS, compose, preset, set_items, to_flat_dict

    preset_name = args.preset or "tiny"
    _check_shared_storage(args)
    if args.concurrency is not None and args.concurrency < 1:
        raise SweepError(f"--concurrency must be at least 1 (got {args.concurrency})")
    metric = args.metric or default_metric.get(preset_name, "val/bleu4")
    if metric not in schema.OPTIMIZABLE_METRICS:
        raise SweepError(f"unknown metric {metric!r}; choose one of {', '.join(schema.OPTIMIZABLE_METRICS)}")
    worker_retries = 2 if args.worker_retries is None else args.worker_retries
    trial_retries = 1 if args.trial_retries is None else args.trial_retries
    if worker_retries < -1 or trial_retries < -1:
        raise SweepError("--worker-retries and --trial-retries must be >= 0 (or -1 = unlimited)")
    keep = 2 if args.keep_checkpoints is None else args.keep_checkpoints
    if keep < 1:
        raise SweepError(f"--keep-checkpoints must be at least 1 (got {keep})")
    if args.cpus_per_trial is not None and args.cpus_per_trial < 0.2:
        raise SweepError(f"--cpus-per-trial must be at least 0.2 (got {args.cpus_per_trial})")

    # The configuration every trial starts from, composed once: the preset, then (later
    # wins) the shared caches of a cluster, the sweep's metric as the loop's, the sweep's
    # defaults, the dataset flags, --set. Its paths are made absolute: trials run elsewhere.
    storage = storage_root(args.storage, cwd)
    caches = ({key: f"{storage}/cache/{folder}" for key, folder in CLUSTER_CACHES.items()}
              if args.address is not None and "://" not in storage else {})
    try:
        fixed = {**caches, **default_overrides.get(preset_name, {}), **strategy_flags.extra_overrides(args),
                 **{key: getattr(args, flag) for flag, key in DATASET_FLAGS.items() if getattr(args, flag) is not None},
                 **set_items(args.set)}
        base = compose(preset_name, {"train.monitor_metric": metric}, fixed, cwd=cwd)
    except (ValueError, TypeError) as exc:
        raise SweepError(f"--set: {exc}") from None
    flat = to_flat_dict(base)
    preset_flat = to_flat_dict(preset(preset_name))
    overrides = {key: flat[key] for key in flat if key in fixed or (key in PATH_KEYS + MAYBE_PATH_KEYS
                                                                     and flat[key] != preset_flat[key])}
    _check_dataset(base, flat)
    if metric == "val/meteor" and not base.eval.use_meteor:
        raise SweepError("--metric val/meteor needs METEOR: drop --set eval.use_meteor=false")
    output_root = overrides.pop("output_dir", None)  # the trials' folders go under it
    if output_root is not None and "://" not in str(output_root):
        output_root = str((cwd / str(output_root)).resolve())

    plan = strategy_flags.build(args, preset_name, flat, overrides)
    settings = TrialSettings(sweep_name="", storage_path=storage, base=flat, point_layers=plan.point_layers(),
                             metric=metric, max_failures=worker_retries, keep_checkpoints=keep,
                             output_root=output_root, local_scratch=args.address is not None)
    # Every trial's configuration must be buildable: try the strategy's probe points.
    from sevlm.model.weights import ensure_pretrained_available

    for point in plan.probe_points():
        try:
            ensure_pretrained_available(compose(flat, settings.point_overrides(point)).model)
        except (ValueError, TypeError) as exc:
            raise SweepError(f"the sweep gives an invalid configuration {point}: {exc}") from None

    try:  # resolved once, here (a relative SQLite path against this folder): from the spec on,
        # every writer and reader, and --resume, take it as saved
        tracking_uri = mlflow_store.resolve_tracking_uri(args.tracking_uri, cwd)
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    db = mlflow_store.sqlite_path(tracking_uri)
    if db is not None and not db.parent.exists():
        raise SweepError(f"the directory of the MLflow database {db} does not exist")

    name = args.name or f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name in (".", ".."):
        raise SweepError(f"--name {name!r}: must be a plain name")
    experiment_dir = f"{storage}/{name}"
    if "://" not in storage and (Path(experiment_dir) / SPEC_FILE).exists():
        raise SweepError(f"a sweep named {name!r} already exists in {storage}; continue it with "
                         f"--resume --name {name}, or choose another --name")
    settings.sweep_name = name
    return SweepSpec(
        kind=kind, name=name, storage_path=storage, experiment_dir=experiment_dir,
        tracking_uri=tracking_uri, experiment=args.experiment or schema.DEFAULT_EXPERIMENT,
        preset=preset_name, overrides=overrides, metric=metric, strategy=plan.to_dict(),
        settings=settings.to_dict(), concurrency=0, trial_retries=trial_retries,
        created=datetime.now().isoformat(timespec="seconds"),
    )


def resume_spec(args: argparse.Namespace, *, kind: str, defining: tuple[str, ...], cwd: Path) -> SweepSpec:
    """The saved spec of the sweep to continue (``--name``, else the only sweep of ``kind``)."""
    _check_shared_storage(args)
    storage = storage_root(args.storage, cwd)
    if args.name:
        experiment_dir = f"{storage}/{args.name}"
    else:
        sweeps = _sweeps(storage, kind)
        if not sweeps:
            raise SweepError(f"--resume: no {kind} sweep in {storage} (pass --name and --storage)")
        if len(sweeps) > 1:  # the newest is not necessarily the one that was interrupted
            names = ", ".join(Path(d).name for d in sweeps)
            raise SweepError(f"--resume: {storage} holds {len(sweeps)} {kind} sweeps ({names}); "
                             f"pass --name with the one to continue")
        experiment_dir = sweeps[0]
    if not (Path(experiment_dir) / SPEC_FILE).is_file():
        raise SweepError(f"--resume: no sweep {Path(experiment_dir).name!r} in {storage}")
    spec = SweepSpec.load(experiment_dir)
    if "base" not in spec.settings:  # saved before the configuration was composed once
        raise SweepError(f"--resume: {experiment_dir} was saved by an older version of sevlm-sweeps, whose "
                         "trial settings this one cannot read; start the sweep again under another --name")
    explicit = [f for f in defining if getattr(args, f, None) is not None]
    if explicit:
        raise SweepError("--resume continues a sweep with its saved settings; drop "
                         + ", ".join("--" + f.replace("_", "-") for f in explicit))
    if args.tracking_uri and mlflow_store.resolve_tracking_uri(args.tracking_uri, cwd) != spec.tracking_uri:
        raise SweepError(f"--resume: this sweep logs to {spec.tracking_uri}; drop --tracking-uri {args.tracking_uri}")
    from ray import tune

    if not tune.Tuner.can_restore(experiment_dir):
        raise SweepError(f"--resume: {experiment_dir} holds no Ray Tune state to resume")
    return spec


def storage_root(flag: str | None, cwd: Path) -> str:
    value = flag or "ray_results"
    if "://" in value:
        return value.rstrip("/")
    return str((cwd / value).resolve())


def _check_shared_storage(args: argparse.Namespace) -> None:
    # On a multi-node cluster trials run, checkpoint and are restored on any node: the
    # default ./ray_results exists on the driver's machine only.
    if args.address is not None and args.storage is None:
        raise SweepError("--address runs trials on other machines, which must all see the sweep's "
                         "checkpoints: pass --storage with a folder every node mounts (NFS) or a bucket")


def _sweeps(storage: str, kind: str) -> list[str]:
    """The sweeps of ``kind`` in ``storage``, newest first."""
    root = Path(storage)
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if (d / SPEC_FILE).is_file()
             and json.loads((d / SPEC_FILE).read_text()).get("kind") == kind]
    return [str(d) for d in sorted(found, key=lambda d: (d / SPEC_FILE).stat().st_mtime, reverse=True)]


def _check_dataset(cfg, flat: dict[str, Any]) -> None:
    """The dataset's files (``sevlm.config_rules``), in the words of the sweep's flags;
    ``flat``: ``cfg`` flattened."""
    from sevlm.config import DATASET_PATHS, input_paths, missing_dataset_paths

    flags = {key: flag for flag, key in DATASET_FLAGS.items()}
    flag = lambda key: "--" + flags[key].replace("_", "-") if key in flags else f"--set {key}"  # noqa: E731
    for key in missing_dataset_paths(cfg.data):
        raise SweepError(f"--dataset {cfg.data.dataset} needs {flag(key)}")
    # A file given for another dataset than the chosen one is checked too: likely a slip.
    given = {key: str(flat[key]) for paths in DATASET_PATHS.values() for key in paths if flat[key]}
    for key, value in {**given, **input_paths(cfg)}.items():
        if "://" not in value and not Path(value).exists():
            raise SweepError(f"{flag(key)} {value}: no such file or directory")
