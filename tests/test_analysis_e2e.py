"""The report of a real ablation sweep (``--quick``: real Ray, training and MLflow), rebuilt
from the MLflow store alone in a process without Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from trainables import mlflow_store
from trainables import tracking_schema as schema

SWEEP = "quick-report"


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    """One real quick sweep (3 variants x 2 seeds, a few steps each); its own hook writes a report."""
    tmp = tmp_path_factory.mktemp("quick-sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        from sweeps.ablations import main

        try:
            rc = main(["--quick", "--name", SWEEP, "--tracking-uri", uri, "--storage", str(tmp / "ray"),
                       "--progress-interval", "600"])
        finally:
            import ray

            if ray.is_initialized():
                ray.shutdown()
    assert rc == 0
    return tmp, uri


def _rebuild(uri: str, out: Path) -> subprocess.CompletedProcess:
    code = ("import sys, analysis.__main__ as m; rc = m.main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'analysis imported Ray'; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, SWEEP, "--tracking-uri", uri, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_sweep_report_rebuilt_from_mlflow_alone(quick_sweep):
    tmp, uri = quick_sweep
    assert (tmp / "reports" / SWEEP / "report.md").stat().st_size > 0  # written by the sweep's own hook
    result = _rebuild(uri, tmp / "rebuilt")
    assert result.returncode == 0, result.stderr
    out = tmp / "rebuilt"
    for stem in ("table1", "comparisons", "variants", "per_seed", "cost"):
        for suffix in ("csv", "md", "tex"):
            assert (out / f"{stem}.{suffix}").stat().st_size > 0, f"{stem}.{suffix}"
    for name in ("fig5.png", "fig5.pdf", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    seeds = pd.read_csv(out / "per_seed.csv")
    assert len(seeds) == 6 and set(seeds["status"]) == {schema.STATUS_FINISHED}
    client = mlflow_store.open_tracking_store(uri)
    parent = mlflow_store.sweep_runs(client, SWEEP).parent.info.run_id
    assert "report.html" in {Path(a.path).name for a in client.list_artifacts(parent, "report")}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_failed_run_of_a_real_sweep_is_named_in_its_report(quick_sweep):
    tmp, uri = quick_sweep
    client = mlflow_store.open_tracking_store(uri)
    trial = sorted(mlflow_store.sweep_runs(client, SWEEP).trials, key=lambda r: r.info.run_name)[-1]
    client.set_terminated(trial.info.run_id, schema.STATUS_FAILED)
    try:
        result = _rebuild(uri, tmp / "with-failure")
        assert result.returncode == 0, result.stderr
        report = (tmp / "with-failure" / "report.md").read_text()
        assert trial.info.run_name in report and schema.STATUS_FAILED in report
        assert "Fewer seeds than the others" in report
    finally:
        client.set_terminated(trial.info.run_id, schema.STATUS_FINISHED)
