"""The command line every sweep shares: flags, exit codes, and
``run_sweep_cli``: flags -> spec -> ``ray.init`` -> ``tuner.fit()`` -> outcome -> summary.

A sweep file (``sweeps/alpha_search.py``, ``sweeps/ablations.py``) declares a
:class:`Sweep` (its strategy's flags and defaults, its default configuration) and calls
``run_sweep_cli``. Everything is checked before the first trial starts: a bad flag or an
impossible sweep ends the command with exit code 2 and a one-line ``error: ...`` message.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sevlm.config import DATASETS, PRESETS
from sweeps import SweepError
from sweeps.console import quiet_console
from sweeps.leftovers import record_driver, stop_leftovers
from sweeps.cluster_wait import expected_workers, wait_for_cluster
from sweeps.resources import TrialResources, decide_resources, local_resources
from sweeps.spec import DEFAULT_METRIC, SweepSpec, build_spec, resume_spec
from sweeps.summary import (
    SweepOutcome,
    print_analysis_report,
    print_best,
    print_counts,
    print_mlflow,
    sweep_outcome,
)
from trainables import tracking_schema as schema

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Flags that define a sweep (besides its strategy's): --resume refuses them.
DEFINING = (
    "concurrency", "metric", "preset", "dataset", "artemis_csv", "contrastive_csv", "image_dir",
    "synthetic_dir", "set", "gpu", "cpus_per_trial", "gpus_per_trial", "worker_retries", "trial_retries",
    "keep_checkpoints", "experiment", "heldout",
)

# What a sweep prints at its end, between the trial counts and where MLflow is.
PrintResults = Callable[[SweepSpec, SweepOutcome, dict[str, str], Any], None]


def print_best_trial(spec: SweepSpec, outcome: SweepOutcome, run_ids: dict[str, str], out) -> None:
    """The default ``print_results``: the sweep's best trial."""
    print_best(outcome, list(spec.plan.columns()), run_ids, out)


@dataclass(frozen=True)
class Sweep:
    """What a sweep file declares."""

    kind: str  # the file's name: sweeps/<kind>.py
    doc: str  # its docstring: the first paragraph is the description, the rest the epilog
    strategy: Any  # sweeps.strategies.TPEFlags or GridFlags
    default_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # preset -> {key: value}
    default_metric: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_METRIC))
    # see PrintResults; sweeps/result_tables.py has the variants x seeds sweeps' own
    print_results: PrintResults = print_best_trial
    # The analysis report (python -m analysis) built at the end, printed under this title
    # (None: none); --no-report skips it.
    analysis_report: str | None = None

    def parser(self) -> argparse.ArgumentParser:
        description, _, epilog = self.doc.partition("\n\n")
        p = argparse.ArgumentParser(prog=f"python sweeps/{self.kind}.py", description=description,
                                    epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        self.strategy.add_flags(p)
        add_common_flags(p, kind=self.kind, default_metric=self.default_metric)
        if self.analysis_report:
            p.add_argument_group("report").add_argument(
                "--no-report", action="store_true",
                help=f"do not build the {self.analysis_report.lower()} at the end (python -m analysis "
                     "SWEEP_NAME builds it later)")
        return p


def add_common_flags(p: argparse.ArgumentParser, *, kind: str, default_metric: dict[str, str]) -> None:
    """Flags shared by every sweep. Defaults of sweep-defining flags are None so that
    ``--resume`` can tell which ones were given explicitly."""
    g = p.add_argument_group("sweep")
    g.add_argument("--concurrency", type=int, default=None,
                   help="trials run at the same time (default: as many as the cluster fits: "
                        "one per GPU, or one per CPU on a CPU-only cluster)")
    defaults = ", ".join(f"{m} for --preset {p}" for p, m in default_metric.items())
    g.add_argument("--metric", default=None,
                   help=f"validation metric that picks each trial's tested checkpoint and the best "
                        f"trial (default {defaults}; one of " + ", ".join(schema.OPTIMIZABLE_METRICS) + ")")
    g.add_argument("--name", default=None,
                   help=f"sweep name = Ray Tune experiment name (default {kind}-<date>-<time>)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep without re-running its finished trials "
                        "(--name; optional when --storage holds one sweep of this kind)")

    g = p.add_argument_group("configuration")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="tiny: offline CPU model on synthetic data (default); paper: the "
                        "paper's model and hyper-parameters")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help="dataset (default: the preset's, synthetic)")
    g.add_argument("--artemis-csv", default=None, help="ArtEmis CSV (artemis_dataset_release_v0.csv)")
    g.add_argument("--contrastive-csv", default=None, help="ArtEmis v2 Contrastive.csv")
    g.add_argument("--image-dir", default=None, help="WikiArt images: <dir>/<art_style>/<painting>.jpg")
    g.add_argument("--synthetic-dir", default=None, help="where the synthetic dataset is generated")
    g.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="fix a configuration value for every trial (repeatable), "
                        "e.g. --set train.epochs=3")
    g.add_argument("--heldout", default=None, metavar="DATASET:DIR",
                   help="also score every trial's tested checkpoint on a held-out set it never "
                        "trained on, e.g. emoset:data/EmoSet-118K (its test split, as "
                        "python -m sevlm.evaluate does): final metrics heldout/emoset/closed_acc, "
                        "heldout/emoset/acc")

    g = p.add_argument_group("cluster and storage")
    g.add_argument("--address", default=None,
                   help="join a running Ray cluster: auto on a cluster node (e.g. the head, through "
                        "ray exec or ray job submit), or HOST:6379; default: start a local one")
    g.add_argument("--wait-for-nodes", type=int, default=None, metavar="N",
                   help="with --address: wait until N worker nodes have joined before deciding what the "
                        "trials get (default: the min_workers that ray up started the cluster with, read "
                        "from ~/ray_bootstrap_config.yaml on the head; 0 elsewhere)")
    g.add_argument("--wait-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="with --address: give up waiting for the nodes after this long (default 900)")
    g.add_argument("--storage", "--storage-path", dest="storage", default=None,
                   help="Ray storage for trial state and checkpoints (default ./ray_results; "
                        "on a multi-node cluster a shared path or bucket)")
    g.add_argument("--gpu", choices=["auto", "on", "off"], default=None,
                   help="one GPU per trial: auto = when the cluster has GPUs (default)")
    g.add_argument("--cpus-per-trial", type=float, default=None,
                   help="CPUs per trial (default: on GPU trials a GPU node's CPUs shared among the "
                        "trials its GPUs hold; on CPU-only clusters the CPUs / concurrency, at least 1)")
    g.add_argument("--gpus-per-trial", type=float, default=None,
                   help="the share of a GPU each GPU trial gets (default 1; 0.5 packs two trials "
                        "on one GPU)")
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
    g.add_argument("--verbose", action="store_true",
                   help="show Ray's, MLflow's and the workers' own logs")


def run_sweep_cli(argv: list[str] | None, sweep: Sweep) -> int:
    try:
        args = sweep.parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    cwd = Path(os.getcwd())
    try:
        if args.resume:
            spec = resume_spec(args, kind=sweep.kind, defining=DEFINING + sweep.strategy.defining, cwd=cwd)
        else:
            spec = build_spec(args, kind=sweep.kind, strategy_flags=sweep.strategy,
                              default_overrides=sweep.default_overrides, default_metric=sweep.default_metric,
                              cwd=cwd)
            spec.settings["heldout"] = _heldout(args.heldout, cwd)
            if args.address is None:  # what a local Ray will offer: fail before starting it
                _decide_resources(spec, args, local_resources(args.gpu))
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with quiet_console(args.verbose):
        return _run(spec, args, sweep)


@contextlib.contextmanager
def _stop_signals_interrupt():
    """SIGTERM (``kill``, a scheduler, ``ray job stop``) and SIGHUP (a closed terminal or
    ssh session) end the sweep as the first Ctrl-C does: Tune's SIGINT handler stops the
    trials, the writer marks their runs KILLED and Tune saves its state for ``--resume``.
    A second signal, like a second Ctrl-C, skips that."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (a sweep run by a test)
        return

    def as_interrupt(signum, frame):
        handler = signal.getsignal(signal.SIGINT)  # Tune's while tuner.fit() runs
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, as_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _heldout(text: str | None, cwd: Path) -> str | None:
    """--heldout DATASET:DIR checked (the split file is there) with DIR made absolute."""
    if text is None:
        return None
    from sevlm.heldout import parse_heldout

    try:
        return str(parse_heldout(text, cwd))
    except ValueError as exc:
        raise SweepError(f"--heldout: {exc}") from None


def _decide_resources(spec: SweepSpec, args: argparse.Namespace, nodes) -> TrialResources:
    decided = decide_resources(nodes, gpu=args.gpu, cpus_per_trial=args.cpus_per_trial,
                               gpus_per_trial=args.gpus_per_trial, concurrency=args.concurrency,
                               total_trials=spec.plan.total_trials())
    spec.concurrency = decided.concurrency
    spec.settings.update(use_gpu=decided.use_gpu, cpus_per_worker=decided.cpus_per_worker,
                         gpus_per_worker=decided.gpus_per_worker or 1.0)
    return decided


def _cluster_nodes(args: argparse.Namespace) -> list[dict[str, float]]:
    """The nodes' resources: on a cluster, once the nodes the sweep expects have joined."""
    import ray

    if args.address is None:
        return [ray.cluster_resources()]
    expected = expected_workers(args.wait_for_nodes)
    return wait_for_cluster(expected, need_gpu=args.gpu == "on", timeout_s=args.wait_timeout, out=sys.stdout)


def _run(spec: SweepSpec, args: argparse.Namespace, sweep: Sweep) -> int:
    import ray

    from trainables.sweep_tracking import SweepTracking, TrackingStoreError

    # the sweep's MLflow on this driver: one client, one write queue, every write through it
    tracking = SweepTracking(spec.tracking_uri, spec.experiment, spec.name, spec.kind, spec.experiment_dir)
    try:
        tracking.probe()
    except TrackingStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.address and "://" not in spec.storage_path:
        print(f"note: on a multi-node cluster every node must see {spec.storage_path} "
              "(shared storage: NFS or a bucket, see --storage)", file=sys.stderr)
    started_ray = False
    if args.resume and args.address is None:
        stopped = stop_leftovers(spec.experiment_dir)
        if stopped:
            print(f"note: stopped {len(stopped)} Ray processes that a killed driver of this sweep left running",
                  file=sys.stderr)
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        context = ray.init(address=args.address, include_dashboard=False, log_to_driver=bool(args.verbose),
                           logging_level=logging.INFO if args.verbose else logging.WARNING)
        started_ray = True
        if args.address is None:  # for the next driver of the sweep, should this one be killed
            record_driver(spec.experiment_dir, context.address_info["session_dir"])
    try:
        device = None
        if not args.resume:
            try:
                decided = _decide_resources(spec, args, _cluster_nodes(args))
            except SweepError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            device = decided.describe()
            print(decided.reason, flush=True)
        # after ray.init: Ray's core installs its own SIGTERM handler (which aborts)
        with _stop_signals_interrupt():
            return _fit(spec, args, sweep, device, tracking)
    finally:
        if started_ray:
            ray.shutdown()


def _fit(spec: SweepSpec, args: argparse.Namespace, sweep: Sweep, device: str | None, tracking) -> int:
    import warnings

    import optuna
    from ray import tune

    from trainables.mlflow_store import http_limits
    from trainables.sweep_tracking import TrackingStoreError
    from trainables.trial import make_trainable

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A trial restarted by Tune reports its iterations again; Optuna ignores the repeats.
    warnings.filterwarnings("ignore", message="The reported value is ignored because this")
    out = sys.stdout
    plan = spec.plan
    if args.resume:
        print(f"Resuming sweep {spec.name} from {spec.experiment_dir}", file=out, flush=True)
        # MLflow writes the previous driver could not send (server away when it ended)
        waiting = tracking.replay_queued()
        if waiting:
            print(f"note: {waiting} earlier MLflow writes still wait for the tracking server", file=out, flush=True)
    else:
        spec.argv = list(sys.argv[1:])
        spec.save()
        print(f"Sweep {spec.name}: {plan.total_trials()} trials ({plan.describe()}), {spec.concurrency} at a "
              f"time, {device} per trial, optimising {spec.metric}; preset {spec.preset}; "
              f"MLflow {spec.tracking_uri}; Ray storage {spec.experiment_dir}", file=out, flush=True)
    try:
        tracking.open_parent_run(metric=spec.metric, params=spec.parent_params(), tags=plan.parent_tags(),
                                 spec=dataclasses.asdict(spec), total_trials=plan.total_trials())
    except TrackingStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    trainable = make_trainable(spec.trial_settings)
    if args.resume:
        # Tune restores its callbacks (MLflow writer, progress table, reaper) with its state.
        tuner = tune.Tuner.restore(spec.experiment_dir, trainable=trainable,
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = _tuner(spec, trainable, tracking, args.progress_interval)
    outcome = sweep_outcome(tuner.fit(), spec.metric, plan.total_trials())
    # Runs left RUNNING by a driver that was killed (SIGKILL, lost machine) for trials
    # that Tune's saved state did not have: nothing continues them.
    tracking.end_orphaned_trial_runs()

    run_ids = tracking.trial_run_ids()
    unsent = tracking.close_parent_run(status=outcome.status, counts=outcome.counts, rows=outcome.rows(run_ids),
                                       best=outcome.best_record(spec.name, run_ids), metric=spec.metric,
                                       columns=plan.columns())
    print_counts(spec.name, outcome, out)
    if unsent:
        print(f"note: the tracking server did not take {unsent} MLflow writes; they are kept on disk and "
              f"sent by: python sweeps/{spec.kind}.py --resume --name {spec.name} --storage {spec.storage_path}",
              file=out, flush=True)
        with http_limits(timeout_s=10, max_retries=1):  # what reads MLflow back fails fast
            _report(spec, args, sweep, outcome, run_ids, out)
    else:
        _report(spec, args, sweep, outcome, run_ids, out)
    print_mlflow(tracking.experiment, tracking.sweep_name, tracking.tracking_uri, tracking.experiment_id,
                 tracking.parent_run_id, out)
    out.flush()
    if outcome.interrupted:
        cmd = f"python sweeps/{spec.kind}.py --resume --name {spec.name} --storage {spec.storage_path}"
        if args.address:
            cmd += f" --address {args.address}"
        print(f"\nThe sweep was interrupted; continue it with:\n  {cmd}", file=out, flush=True)
        return EXIT_INTERRUPTED
    counts = outcome.counts
    if counts["finished"] == 0 and counts["failed"] > 0:
        return EXIT_FAILED
    return EXIT_OK


def _report(spec: SweepSpec, args: argparse.Namespace, sweep: Sweep, outcome: SweepOutcome,
            run_ids: dict[str, str], out) -> None:
    """The end of the summary: the sweep's ``print_results``, then its analysis report."""
    sweep.print_results(spec, outcome, run_ids, out)
    if sweep.analysis_report and not getattr(args, "no_report", False):
        print_analysis_report(spec, sweep.analysis_report, out)


def _tune_limits_concurrency(search_alg) -> bool:
    from ray.tune.search import Searcher

    return search_alg is None or isinstance(search_alg, Searcher)


def _tuner(spec: SweepSpec, trainable, tracking, progress_interval: float):
    from ray import tune

    from sweeps.progress import ProgressTable
    from trainables.mlflow_writer import MlflowTrialWriter
    from trainables.placement import PlacementGroupReaper

    plan = spec.plan
    writer = MlflowTrialWriter(tracking, storage_path=spec.storage_path, metric=spec.metric,
                               trial_tags=plan.trial_tags)
    progress = ProgressTable(spec.name, plan.total_trials(), plan.columns(), spec.metric, progress_interval)
    search_alg = plan.search_alg(spec.metric, spec.concurrency)
    return tune.Tuner(
        trainable,
        param_space=plan.param_space(),
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=plan.scheduler(spec.metric),
            num_samples=plan.num_samples(),
            # Tune applies it to a Searcher (or its default generator); any other search
            # algorithm holds the concurrency itself, and Tune would only warn.
            max_concurrent_trials=spec.concurrency if _tune_limits_concurrency(search_alg) else None,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage_path,
            callbacks=[writer, progress, PlacementGroupReaper(spec.name)],
            failure_config=tune.FailureConfig(max_failures=spec.trial_retries),
            verbose=0,
        ),
    )
