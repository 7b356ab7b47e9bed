"""The mlrepro command's shared options: validation, signals and option order."""

import argparse
import json
import os
import signal
import types

import pytest

from mlrepro import cli


def terminated_workload():
    """A workload that logs one epoch and then receives SIGTERM, as `docker stop` sends it."""

    def run(args, record):
        record.log(epoch=1, loss=1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the workload")

    return types.SimpleNamespace(run=run)


def workload_args(tmp_path, **overrides):
    values = {"command": "fake", "runs_dir": tmp_path / "runs", "no_record": False, "output": None, "seed": 42, "deterministic": False}
    values.update(overrides)
    return argparse.Namespace(**values)


def test_sigterm_marks_run_interrupted(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)

    assert cli.run_workload(terminated_workload(), workload_args(tmp_path)) == 143

    (record,) = (tmp_path / "runs").iterdir()
    assert json.loads((record / "summary.json").read_text())["status"] == "interrupted"
    assert (record / "env.json").exists()
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_range_exits_2(seed, capsys):
    assert cli.main(["verify-gpu", "--no-record", "--seed", seed]) == 2

    error = capsys.readouterr().err
    assert f"--seed {seed} is out of range" in error
    assert "Traceback" not in error


def test_output_folder_exits_2(tmp_path, capsys):
    assert cli.main(["verify-gpu", "--no-record", "--output", str(tmp_path)]) == 2

    assert f"--output {tmp_path} is a folder" in capsys.readouterr().err


def test_runs_dir_that_is_a_file_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")

    assert cli.main(["verify-gpu", "--runs-dir", str(blocker / "runs")]) == 2

    assert "--runs-dir: cannot create the folder" in capsys.readouterr().err


def test_log_level_after_subcommand():
    parser = cli.build_parser()

    assert parser.parse_args(["verify-gpu", "--log-level", "DEBUG"]).log_level == "DEBUG"
    assert parser.parse_args(["--log-level", "ERROR", "verify-gpu"]).log_level == "ERROR"
    assert parser.parse_args(["verify-gpu"]).log_level == "INFO"


def test_runs_dir_after_action(tmp_path):
    parser = cli.build_parser()

    assert parser.parse_args(["runs", "list", "--runs-dir", str(tmp_path)]).runs_dir == tmp_path
    assert parser.parse_args(["runs", "--runs-dir", str(tmp_path), "list"]).runs_dir == tmp_path
