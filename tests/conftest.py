"""Shared pytest settings: every test runs offline, and run records go to a temporary folder."""

import os

# Set before transformers or datasets are imported: with the network closed,
# hub calls otherwise hang for about 45 s before failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_runs_dir(tmp_path, monkeypatch):
    """Keep run records of CLI calls out of the working tree."""
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("MLREPRO_RUNS_DIR", str(runs_dir))
    return runs_dir
