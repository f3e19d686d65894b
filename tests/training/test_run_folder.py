"""RunFolder: the files of a training run, and --force's clean-up."""

from __future__ import annotations

from pathlib import Path

from audiocpc.training.run_folder import RunFolder


def test_clear_removes_the_run_and_only_the_run(tmp_path: Path) -> None:
    run = RunFolder.under(tmp_path, "gru")
    assert run.path == tmp_path / "cpc" / "gru" and not run.holds_run()
    run.tensorboard_dir.mkdir(parents=True)
    (run.tensorboard_dir / "events").write_bytes(b"x")
    for path in (run.checkpoint_path, run.history_path, run.losses_path, run.data_report_path,
                 run.config_path, run.path / "notes.txt"):
        path.write_bytes(b"x")
    assert run.holds_run()
    run.clear()
    assert not run.holds_run()
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "notes.txt"]


def test_the_name_of_a_relative_run_folder_is_its_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mymodel").mkdir()
    monkeypatch.chdir(tmp_path / "mymodel")
    assert RunFolder(Path(".")).name == "mymodel"
