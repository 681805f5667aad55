"""What a user sees when something is wrong (issue 13): one message and exit status 2 from
``python -m sevlm.train`` (the traceback only with ``--verbose``), and missing pretrained
weights found before any training, on the command line and on a sweep's driver."""

from __future__ import annotations

import time

import pandas as pd
import pytest

import sevlm  # noqa: F401  (torchvision shim first)
from sevlm.data import V1_COLUMNS, ArtEmisFormatError
from sevlm.emotions import EMOTIONS
from sevlm.model import weights
from sevlm.model.weights import WeightsUnavailableError, ensure_pretrained_available
from sevlm.train import EXIT_USER_ERROR, main


def _bad_csv(tmp_path):
    rows = [
        ["Realism", f"work-{i}", EMOTIONS[i % 9], f"the painting number {i} makes me feel calm", 1]
        for i in range(12)
    ]
    rows[2][2] = "happiness"
    path = tmp_path / "artemis.csv"
    pd.DataFrame(rows, columns=list(V1_COLUMNS)).to_csv(path, index=False)
    return path


def _args(tmp_path, csv):
    (tmp_path / "images").mkdir(exist_ok=True)
    return ["--preset", "tiny", "--quiet", "--dataset", "artemis_v1", "--artemis-csv", str(csv),
            "--image-dir", str(tmp_path / "images"), "--feature-cache-dir", str(tmp_path / "features"),
            "--output-dir", str(tmp_path / "run")]


def test_a_format_error_is_one_message_with_file_row_and_skip_flag(tmp_path, capsys):
    csv = _bad_csv(tmp_path)
    assert main(_args(tmp_path, csv)) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert str(csv) in err and "row 3" in err and "'happiness'" in err
    assert "--set data.on_unknown_emotion=skip" in err and "--verbose" in err

    with pytest.raises(ArtEmisFormatError):
        main([*_args(tmp_path, csv), "--verbose"])


def _restore_offline_switches(monkeypatch):
    """Offline mode set by a test is undone after it (the env and huggingface_hub's flag)."""
    import huggingface_hub.constants as hf_constants

    for name in weights.OFFLINE_ENV:
        monkeypatch.setenv(name, "0")  # "0" = online; restored to unset afterwards
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return hf_constants


@pytest.fixture()
def no_hub(monkeypatch):
    """A machine without the hub and with an empty cache."""
    _restore_offline_switches(monkeypatch)
    monkeypatch.setattr(weights, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(weights, "_hf_cached", lambda repo, names: False)


def test_missing_weights_stop_the_cli_at_once_with_the_flags_to_use(tmp_path, capsys, no_hub):
    start = time.perf_counter()
    code = main(["--preset", "paper", "--quiet", "--output-dir", str(tmp_path / "run"),
                 "--synthetic-dir", str(tmp_path / "synthetic"),
                 "--feature-cache-dir", str(tmp_path / "features")])
    assert code == EXIT_USER_ERROR and time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "image encoder ViT-B-16 'openai'" in err and "decoder 'distilgpt2'" in err
    assert "--image-pretrained PATH" in err and "--decoder DIR" in err
    assert not (tmp_path / "synthetic").exists()  # nothing was prepared before the check


def test_local_weights_and_random_weights_need_no_hub(tmp_path, no_hub):
    from sevlm.config import paper, tiny

    ensure_pretrained_available(tiny().model)  # random: nothing to load
    model = paper().model
    checkpoint = tmp_path / "clip.pt"
    checkpoint.write_bytes(b"weights")
    decoder = tmp_path / "distilgpt2"
    decoder.mkdir()
    (decoder / "config.json").write_text("{}")
    model.image_encoder.pretrained, model.decoder.name_or_path = str(checkpoint), str(decoder)
    ensure_pretrained_available(model)
    model.decoder.name_or_path = str(tmp_path)  # a directory, but not a saved model
    with pytest.raises(WeightsUnavailableError, match="without config.json"):
        ensure_pretrained_available(model)


def test_cached_weights_offline_switch_to_offline_mode(monkeypatch):
    import os

    from sevlm.config import paper

    hf_constants = _restore_offline_switches(monkeypatch)
    monkeypatch.setattr(weights, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(weights, "_hf_cached", lambda repo, names: True)
    ensure_pretrained_available(paper().model)
    # No minute of retries: every later hub call reads the cache.
    assert hf_constants.HF_HUB_OFFLINE is True
    assert all(os.environ[name] == "1" for name in weights.OFFLINE_ENV)


def test_a_sweep_driver_refuses_before_the_first_trial(no_hub, tmp_path):
    from sweeps import SweepError, alpha_search
    from sweeps.spec import build_spec

    def spec(preset):
        args = alpha_search.SWEEP.parser().parse_args(["--preset", preset, "--storage", str(tmp_path / "runs"),
                                                        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
        return build_spec(args, kind="alpha_search", strategy_flags=alpha_search.SWEEP.strategy,
                          default_overrides=alpha_search.SWEEP.default_overrides,
                          default_metric=alpha_search.SWEEP.default_metric, cwd=tmp_path)

    with pytest.raises(SweepError, match="--image-pretrained"):
        spec("paper")
    assert spec("tiny").trial_settings.base["preset"] == "tiny"
