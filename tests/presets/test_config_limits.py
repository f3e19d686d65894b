"""Absurd values are refused when the configuration is loaded, before any scan or decoding,
with the limit and the reason for it (issue 14, item 7)."""

from __future__ import annotations

import re

import pytest

from audiocpc import load_config
from audiocpc.errors import ConfigError


@pytest.mark.parametrize("setting, reason", [
    ("train.seed=-1", "train.seed"),
    (f"train.seed={2 ** 70}", "train.seed"),
    ("data.N=1000000", "data.N"),
    ("data.sample_rate=1000000000", "data.sample_rate"),
    ("data.sample_rate=10", "data.sample_rate"),
    ("data.original_sr=1000000000000", "data.original_sr"),
    ("data.full_duration=.inf", "data.full_duration"),
    ("data.full_duration=100000", "data.full_duration"),
    ("train.lr=.inf", "train.lr"),
    ("train.grad_clip=.inf", "train.grad_clip"),
    ("train.weight_decay=.inf", "train.weight_decay"),
    ("train.distributed_timeout_s=1e300", "train.distributed_timeout_s"),
    ("train.max_minutes=.inf", "train.max_minutes"),
    ("train.threads=1000000", "train.threads"),
    ("data.num_workers=100000", "data.num_workers"),
    ("model.z_dim=10000000", "model.z_dim"),
    ("model.c_dim=10000000", "model.c_dim"),
    ("loss.negatives.count=1000000000", "loss.negatives.count"),
    ("augment.gain_db=.inf", "augment.gain_db"),
    ("augment.gain_db=1000000", "augment.gain_db"),
    ("augment.noise_snr_db=.nan", "augment.noise_snr_db"),
    ("augment.time_mask_seconds=.inf", "augment.time_mask_seconds"),
    ("loss.step_weights=[1, .inf, 1, 1]", "loss.step_weights"),
])
def test_absurd_values_fail_at_load_with_the_reason(setting: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("1dconv_tiny", [setting])
    lines = str(err.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(reason), lines[0]
    assert "Traceback" not in lines[0] and len(lines[0]) < 400


@pytest.mark.parametrize("setting", ["train.seed=-1", f"train.seed={2 ** 70}",
                                     "data.sample_rate=1000000000", "data.N=1000000"])
def test_the_message_says_why_the_limit_exists(setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("1dconv_tiny", [setting])
    assert re.search(r"\(got [^)]*\); \w+", str(err.value)), str(err.value)


def test_a_batch_too_large_for_memory_is_refused() -> None:
    # each value is allowed, but 4096 crops of 60 s at 192 kHz do not fit any memory
    with pytest.raises(ConfigError, match=r"data\.N.*GiB"):
        load_config("cpc_tiny", ["data.N=4096", "data.sample_rate=192000", "data.full_duration=60"])


@pytest.mark.parametrize("setting", ["train.seed=0", f"train.seed={2 ** 32 - 1}", "data.N=2",
                                     "data.N=4096", "model.z_dim=4096", "train.lr=1e12"])
def test_ordinary_and_edge_values_still_load(setting: str) -> None:
    load_config("1dconv_tiny", [setting])


@pytest.mark.parametrize("rate", [1000, 8000, 384_000])
def test_every_sample_rate_of_real_audio_loads(rate: int) -> None:
    load_config("cpc_tiny", [f"data.sample_rate={rate}", "data.full_duration=2.0"])
