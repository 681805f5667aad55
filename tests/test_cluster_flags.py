"""The sweep flags a cluster user can get wrong: refused before Ray or MLflow is touched."""

from __future__ import annotations

import json

import pytest

from sweeps.spec import SPEC_FILE


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _main(module, argv):
    import importlib

    return importlib.import_module(f"sweeps.{module}").main(argv)


@pytest.mark.parametrize("module", ["alpha_search", "ablations"])
@pytest.mark.parametrize("extra", [[], ["--resume", "--name", "s1"]])
def test_address_without_storage_is_refused(module, extra, capsys, tmp_path):
    import ray

    rc = _main(module, ["--address", "auto"] + extra)
    err = capsys.readouterr().err
    assert rc == 2
    assert "--address" in err and "--storage" in err and "every node" in err, err
    assert not ray.is_initialized()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def _fake_sweep(storage, name: str, kind: str, settings: dict | None = None) -> None:
    folder = storage / name
    folder.mkdir(parents=True)
    spec = dict(kind=kind, name=name, storage_path=str(storage), experiment_dir=str(folder), tracking_uri="",
                experiment="", preset="tiny", overrides={}, metric="", strategy={},
                settings={"base": {}} if settings is None else settings,
                concurrency=0, trial_retries=0)
    (folder / SPEC_FILE).write_text(json.dumps(spec))


def test_resume_without_name_refuses_when_several_sweeps_could_be_meant(capsys, tmp_path):
    storage = tmp_path / "ray_results"
    _fake_sweep(storage, "alpha_search-1", "alpha_search")
    _fake_sweep(storage, "alpha_search-2", "alpha_search")
    _fake_sweep(storage, "ablations-1", "ablations")  # another kind: never meant
    assert _main("alpha_search", ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "2 alpha_search sweeps" in err and "alpha_search-1" in err and "alpha_search-2" in err
    assert "--name" in err and "ablations-1" not in err


def test_resume_without_name_takes_the_only_sweep_of_its_kind(capsys, tmp_path):
    storage = tmp_path / "ray_results"
    _fake_sweep(storage, "alpha_search-1", "alpha_search")
    _fake_sweep(storage, "ablations-1", "ablations")
    # the one sweep is found (and then refused only because this fake holds no Tune state)
    assert _main("ablations", ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds no Ray Tune state" in err and "ablations-1" in err, err


def test_resume_of_a_sweep_saved_by_an_older_version_says_so(capsys, tmp_path):
    _fake_sweep(tmp_path / "ray_results", "ablations-1", "ablations", settings={"preset": "tiny", "overrides": {}})
    assert _main("ablations", ["--resume"]) == 2
    assert "saved by an older version of sevlm-sweeps" in capsys.readouterr().err
