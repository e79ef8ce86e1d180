import json

import pytest

from synthkit.config import ConfigError, RunConfig, from_dict, model_config, to_dict


def test_run_config_round_trip(tmp_path):
    cfg = RunConfig(model=model_config("tiny", image_channels=4, mask_classes=4))
    path = cfg.save(tmp_path / "config.json")
    again = RunConfig.load(path)
    assert again == cfg
    assert again.model.in_channels == 8
    assert isinstance(again.model.channel_mults, tuple)


def test_unknown_key_is_an_error(tmp_path):
    data = to_dict(RunConfig())
    data["model"]["chanels"] = 3
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="chanels"):
        RunConfig.load(tmp_path / "c.json")


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        model_config("huge")


def test_from_dict_rejects_non_object():
    with pytest.raises(ConfigError):
        from_dict(RunConfig, [1, 2])  # type: ignore[arg-type]
