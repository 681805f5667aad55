"""Releasing the workers of a stopped trial.

Ray Train V2 reserves the workers of a run in a placement group that belongs to the job,
not to the Train controller. When Tune stops a trial (ASHA) or a trial's actor dies, the
controller dies with it and the group would stay reserved until the sweep ends: the next
trials wait for its CPU/GPU forever. Ray's own PlacementGroupCleaner needs the Ray State
API, i.e. the dashboard, which this environment cannot start (ray[default] is not
installed). So the workers register their placement group with a registry actor owned by
the Tune driver, and the driver releases a trial's groups when the trial ends or is
restarted (:class:`PlacementGroupReaper`).
"""

from __future__ import annotations

import logging

from ray.tune import Callback

from trainables import tracking_schema as schema

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "sevlm_pg_registry_"  # + sweep name


class PlacementGroupRegistry:
    """Actor (owned by the Tune driver): placement groups of each trial's Ray Train run."""

    def __init__(self):
        self._groups: dict[str, list] = {}

    def register(self, run_name: str, placement_group) -> None:
        self._groups.setdefault(run_name, []).append(placement_group)

    def release(self, run_name: str) -> int:
        from ray.util.placement_group import placement_group_table, remove_placement_group

        removed = 0
        for pg in self._groups.pop(run_name, []):
            try:
                if placement_group_table(pg).get("state") != "REMOVED":
                    remove_placement_group(pg)
                    removed += 1
            except Exception as exc:  # noqa: BLE001
                log.warning("could not remove placement group %s: %s", pg.id.hex(), exc)
        return removed


def registry_name(sweep_name: str) -> str:
    return REGISTRY_PREFIX + sweep_name


def register_placement_group(sweep_name: str, run_name: str) -> None:
    """Called on the training worker: tell the driver's registry which group it runs in."""
    import ray
    from ray.util.placement_group import get_current_placement_group

    try:
        pg = get_current_placement_group()
        if pg is None:
            return
        registry = ray.get_actor(registry_name(sweep_name))
        ray.get(registry.register.remote(run_name, pg), timeout=60)
    except Exception as exc:  # noqa: BLE001 - no registry (e.g. not run by a sweep)
        log.info("placement group not registered: %s", exc)


class PlacementGroupReaper(Callback):
    """Tune callback (driver): releases a trial's Ray Train placement groups when the trial
    completes, fails, is stopped by the scheduler or is restarted."""

    def __init__(self, sweep_name: str):
        self.sweep_name = sweep_name
        self._registry = None

    def __getstate__(self):
        return {"sweep_name": self.sweep_name}

    def __setstate__(self, state):
        self.sweep_name = state["sweep_name"]
        self._registry = None

    def setup(self, **info):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's node: it lives and dies with the sweep, not with a worker node.
        self._registry = ray.remote(num_cpus=0)(PlacementGroupRegistry).options(
            name=registry_name(self.sweep_name),
            get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                node_id=ray.get_runtime_context().get_node_id(), soft=True
            ),
        ).remote()

    def _release(self, trial) -> None:
        import ray

        if self._registry is None:
            return
        try:
            removed = ray.get(
                self._registry.release.remote(schema.trial_run_name(self.sweep_name, trial.trial_id)),
                timeout=60,
            )
            if removed:
                log.info("released %d placement group(s) of trial %s", removed, trial.trial_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not release the placement groups of %s: %s", trial.trial_id, exc)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_experiment_end(self, trials, **info):
        import ray

        for trial in trials:
            self._release(trial)
        if self._registry is not None:
            ray.kill(self._registry)
            self._registry = None
