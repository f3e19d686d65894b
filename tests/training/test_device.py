"""One rule for the device: training (train.device), loading and embedding (--device, or
device= in Python) all go through resolve_device, so `auto` means the same everywhere and a
device this machine lacks is one line that names the setting and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiocpc import load_config
from audiocpc.cli import main
from audiocpc.errors import ConfigError
from audiocpc.training.device import resolve_device


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one without a GPU, wherever the test runs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_the_cpu_without_cuda(no_cuda: None) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", local_rank=1) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_is_this_processes_gpu_under_torchrun(two_gpus: None) -> None:
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1)  # 4 processes share 2 GPUs
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # asked for by name


@pytest.mark.parametrize("setting, fix", [("train.device", "--set train.device=auto"),
                                          ("--device", "--device auto")])
def test_cuda_without_cuda_is_one_line_with_the_setting_and_the_fix(no_cuda: None, setting: str,
                                                                    fix: str) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_device("cuda", setting=setting)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{setting}: cuda ") and "no CUDA device" in message and fix in message


def test_a_gpu_index_beyond_the_machines_is_refused(two_gpus: None) -> None:
    with pytest.raises(ConfigError, match=r"--device: cuda:2 .* 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_train_with_cuda_on_a_machine_without_it_exits_2(no_cuda: None, tone_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--preset", "1dconv_tiny", "--data", str(tone_dir), "--out", str(tmp_path),
            "--quiet", "--set", "train.device=cuda"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.device: cuda" in err[0] and "--set train.device=auto" in err[0]


def test_a_device_name_torch_does_not_know_is_one_line(tone_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # before: torch's RuntimeError and a traceback
    args = ["train", "--preset", "1dconv_tiny", "--data", str(tone_dir), "--out", str(tmp_path),
            "--quiet", "--set", "train.device=gpu"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.device: 'gpu' is not a device" in err[0]


def test_loading_a_model_on_cuda_without_it_names_device(no_cuda: None, tmp_path: Path) -> None:
    import audiocpc
    from audiocpc.models import build_cpc
    from audiocpc.training.exported import write_safetensors

    config = load_config("1dconv_tiny", ["model.z_dim=16", "model.c_dim=16", "model.encoder.filters=16"])
    write_safetensors(build_cpc(config), config, tmp_path / "model", "tiny")
    assert audiocpc.load(tmp_path / "model", device="auto").device == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^--device: cuda was asked for .* use --device auto"):
        audiocpc.load(tmp_path / "model", device="cuda")
