"""Run records: the files of a run, its status, plots, listing and comparison."""

import argparse
import json
import types

import pytest

from mlrepro import cli, runs
from mlrepro.errors import CheckFailed


def fake_workload(behaviour):
    """A workload module whose run() logs two epochs, then acts as behaviour requests."""

    def run(args, record):
        record.log(epoch=1, loss=2.0, accuracy=0.25)
        record.log(epoch=2, loss=1.5, accuracy=0.5)
        if behaviour == "interrupt":
            raise KeyboardInterrupt
        if behaviour == "check":
            raise CheckFailed("GPU result differs", {"max_abs_diff": 3.0})
        if behaviour == "crash":
            raise RuntimeError("boom")
        return {"loss": 1.5, "accuracy": 0.5}

    return types.SimpleNamespace(run=run)


def workload_args(runs_dir, **overrides):
    values = {"command": "fake", "runs_dir": runs_dir, "no_record": False, "output": None, "seed": 42, "deterministic": False}
    values.update(overrides)
    return argparse.Namespace(**values)


def only_run(runs_dir):
    (directory,) = [path for path in runs_dir.iterdir() if path.is_dir()]
    return directory


def test_finished_run_writes_every_file(tmp_path):
    assert cli.run_workload(fake_workload("finish"), workload_args(tmp_path, seed=7)) == 0

    directory = only_run(tmp_path)
    summary = json.loads((directory / "summary.json").read_text())
    config = json.loads((directory / "config.json").read_text())
    metrics = runs.read_metrics(directory)
    assert directory.name.endswith("-fake")
    assert summary["status"] == "finished"
    assert summary["accuracy"] == 0.5
    assert config["seed"] == 7
    assert [entry["loss"] for entry in metrics] == [2.0, 1.5]
    assert len(json.loads((directory / "env.json").read_text())["lock"]["sha256"]) == 64
    assert (directory / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_run_is_marked_interrupted(tmp_path):
    assert cli.run_workload(fake_workload("interrupt"), workload_args(tmp_path)) == 130

    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert "accuracy" not in summary


def test_failed_check_keeps_summary_and_exits_1(tmp_path):
    output = tmp_path / "out" / "summary.json"

    assert cli.run_workload(fake_workload("check"), workload_args(tmp_path / "runs", output=output)) == 1

    summary = json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["max_abs_diff"] == 3.0
    assert json.loads(output.read_text()) == {"max_abs_diff": 3.0}


def test_crashed_run_is_marked_failed(tmp_path):
    with pytest.raises(RuntimeError):
        cli.run_workload(fake_workload("crash"), workload_args(tmp_path))

    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: boom"


def test_no_record_writes_nothing(tmp_path):
    assert cli.run_workload(fake_workload("finish"), workload_args(tmp_path, no_record=True)) == 0

    assert list(tmp_path.iterdir()) == []


def test_same_second_runs_get_distinct_folders(tmp_path):
    first = runs.RunRecord.create(tmp_path, "fake", {})
    second = runs.RunRecord.create(tmp_path, "fake", {})

    assert first.directory != second.directory


def test_list_and_compare(tmp_path, capsys):
    cli.run_workload(fake_workload("finish"), workload_args(tmp_path, seed=1))
    cli.run_workload(fake_workload("interrupt"), workload_args(tmp_path, seed=2))
    first, second = sorted(path.name for path in tmp_path.iterdir())

    assert cli.main(["runs", "--runs-dir", str(tmp_path), "list"]) == 0
    listing = capsys.readouterr().out
    assert cli.main(["runs", "--runs-dir", str(tmp_path), "compare", first, second]) == 0
    comparison = capsys.readouterr().out

    assert "finished" in listing
    assert "interrupted" in listing
    assert "seed: A=1 B=2" in comparison
    assert "status: A='finished' B='interrupted'" in comparison


def test_compare_unknown_run_exits_2(tmp_path, capsys):
    assert cli.main(["runs", "--runs-dir", str(tmp_path), "compare", "nope", "nada"]) == 2

    assert "run 'nope' not found" in capsys.readouterr().err


def test_compare_plain_folder_exits_2(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    assert cli.main(["runs", "--runs-dir", str(tmp_path), "compare", "a", "b"]) == 2

    assert "is not a run record" in capsys.readouterr().err
