"""Configuration: presets, overrides and load-time validation messages."""

from __future__ import annotations

import pytest
import yaml

from audiocpc.cli import main
from audiocpc import load_config
from audiocpc.config import window_samples
from audiocpc.presets import available_presets, config_from_dict
from audiocpc.errors import ConfigError


def test_reference_defaults() -> None:
    cfg = load_config("1dconv_gru")
    assert (cfg.data.T, cfg.data.k, cfg.data.N) == (27, 3, 8)
    assert (cfg.data.full_duration, cfg.data.sample_rate) == (4.0, 4410)
    assert window_samples(cfg) == 588
    enc = cfg.model.encoder.params
    assert enc["strides"] == [5, 4, 2, 2, 2] and enc["kernels"] == [10, 8, 4, 4, 4]
    assert enc["filters"] == 512 and (cfg.model.z_dim, cfg.model.c_dim) == (256, 512)
    tr = load_config("1dconv_transformer").model.context
    assert tr.type == "transformer"
    assert {k: tr.params[k] for k in ("num_layers", "num_heads", "dff", "dense_units")} == {
        "num_layers": 2, "num_heads": 2, "dff": 100, "dense_units": [100]}
    # what differs from the reference's Transformer, by measurement (docs/suite.md)
    assert {k: tr.params[k] for k in ("dropout", "norm_first", "scale_input", "position",
                                      "position_kernel")} == {
        "dropout": 0.0, "norm_first": True, "scale_input": False, "position": "conv",
        "position_kernel": 5}
    assert load_config("1dconv_lstm").model.context.type == "lstm"


@pytest.mark.parametrize("name", available_presets())
def test_every_preset_loads_and_round_trips(name: str) -> None:
    cfg = load_config(name)
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_dotted_overrides_are_typed() -> None:
    cfg = load_config("1dconv_gru", ["train.lr=1e-3", "data.N=4", "model.context.num_layers=2"])
    assert cfg.train.lr == 1e-3 and cfg.data.N == 4
    assert cfg.model.context.params["num_layers"] == 2


def test_unknown_key_names_the_nearest_valid_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("1dconv_gru", ["train.learning_rat=1", "data.TT=3"])
    text = str(err.value)
    assert "data.TT: unknown key; did you mean 'data.T'?" in text
    assert "train.learning_rat" in text
    with pytest.raises(ConfigError, match="model.encoder.strdes: .*did you mean 'strides'"):
        load_config("1dconv_gru", ["model.encoder.strdes=[1]"])


def test_component_arguments_are_checked_against_their_types_at_load_time() -> None:
    """The components' annotations are types even in modules with postponed annotations, so
    a value of the wrong type or outside a Literal fails when the config loads, naming it."""
    with pytest.raises(ConfigError) as err:
        load_config("1dconv_transformer", ["model.context.position=rope", "model.context.dff=abc",
                                           "model.encoder.activation_fn=swish"])
    text = str(err.value)
    assert "model.context.position: Input should be 'sinusoidal', 'none' or 'conv' (got 'rope')" in text
    assert "model.context.dff: Input should be a valid integer" in text
    assert "model.encoder.activation_fn: Input should be 'leaky_relu', 'relu', 'gelu' or 'tanh'" in text
    assert load_config("1dconv_transformer", ["model.context.dff=64"]).model.context.params["dff"] == 64


def test_a_setting_a_component_rejects_when_built_is_one_line_naming_it() -> None:
    from audiocpc.models import build_cpc

    config = load_config("1dconv_transformer", ["model.context.num_heads=3"])  # 256 % 3 != 0
    with pytest.raises(ConfigError) as err:
        build_cpc(config)
    assert str(err.value) == "model.z_dim (256) must be divisible by num_heads (3)"
    with pytest.raises(ConfigError, match=r"^model.context.position_kernel \(0\) must be at least 1$"):
        build_cpc(load_config("1dconv_transformer", ["model.context.position=conv",
                                                     "model.context.position_kernel=0"]))


def test_window_length_not_whole_names_nearest_full_durations() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("1dconv_gru", ["data.full_duration=4.1"])
    message = str(err.value)
    assert message.startswith("data.full_duration:")
    # 18081 samples / 30 windows: the nearest whole multiples are 18060 and 18090 samples
    assert "4.095238 or 4.1020408" in message
    for nearest in (18060 / 4410, 18090 / 4410):
        load_config("1dconv_gru", [f"data.full_duration={nearest!r}"])  # both are accepted


def test_bad_preset_name_lists_the_presets() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("1dconv_gr")
    assert "unknown preset '1dconv_gr'" in str(err.value)
    assert "Did you mean '1dconv_gru'?" in str(err.value)
    assert "1dconv_transformer" in str(err.value)


def test_every_problem_is_reported_with_its_field() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("1dconv_gru", ["train.lr=-1", "model.context.type=grux", "data.N=one"])
    fields = [p.split(":")[0] for p in err.value.problems]
    assert {"train.lr", "model.context.type", "data.N"} <= set(fields)
    assert any("Registered: gru, lstm" in p for p in err.value.problems)


def test_cli_config_show_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "1dconv_gru", "--set", "train.lr=3e-4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["lr"] == 3e-4 and shown["data"]["T"] == 27
    assert main(["config", "show", "1dconv_gru", "--set", "data.TT=1"]) == 2
    assert "did you mean 'data.T'" in capsys.readouterr().err


def _suggested_durations(message: str) -> list[str]:
    import re

    found = re.search(r"nearest valid full_duration: ([0-9.]+) or ([0-9.]+)", message)
    assert found, message
    return list(found.groups())


@pytest.mark.parametrize("given", ["4.1", "3.9", "4.0001", "6.05"])
def test_printed_nearest_full_durations_pass_when_pasted(given: str) -> None:
    # The README's own example printed 4.095238 and 4.102041, which the check then refused.
    with pytest.raises(ConfigError) as err:
        load_config("1dconv_gru", [f"data.full_duration={given}"])
    for printed in _suggested_durations(str(err.value)):
        config = load_config("1dconv_gru", [f"data.full_duration={printed}"])
        assert config.data.crop_samples % (config.data.T + config.data.k) == 0


def test_readme_example_values_are_accepted() -> None:
    for value in ("4.095238", "4.1020408"):
        assert load_config("1dconv_gru", [f"data.full_duration={value}"]).data.crop_samples in (18060, 18090)


def test_window_too_short_names_the_encoder_minimum_and_a_value_that_works() -> None:
    import re

    with pytest.raises(ConfigError) as err:
        load_config("1dconv_gru", ["data.full_duration=0.2993197"])
    message = str(err.value)
    assert "at least 465 samples per window" in message  # the reference encoder's minimum
    printed = re.search(r"set data.full_duration=([0-9.]+)", message).group(1)
    assert load_config("1dconv_gru", [f"data.full_duration={printed}"]).data.crop_samples == 465 * 30


def test_frame_mode_duration_off_the_sample_grid_names_values_that_pass() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("cpc_tiny", ["data.full_duration=1.00007"])  # 8000.56 samples at 8 kHz
    for printed in _suggested_durations(str(err.value)):
        assert load_config("cpc_tiny", [f"data.full_duration={printed}"]).data.crop_samples in (8000, 8001)


def test_the_old_sample_rate_name_is_still_read_from_yaml_set_and_saved_runs(tmp_path):
    from audiocpc.presets.load import config_from_dict

    assert load_config("cpc_tiny", ["data.desired_sr=8000"]).data.sample_rate == 8000
    stored = load_config("cpc_tiny").model_dump()
    stored["data"]["desired_sr"] = stored["data"].pop("sample_rate")
    stored["data"]["desired_sr"] = 11025
    assert config_from_dict(stored).data.sample_rate == 11025
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  desired_sr: 22050\n", encoding="utf-8")
    assert load_config(str(path)).data.sample_rate == 22050
