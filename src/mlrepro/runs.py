"""Run records: every workload run keeps its config, metrics and summary under runs/.

    runs/<UTC time>-<workload>/
        config.json     every argument of the run
        metrics.jsonl   one JSON object per logged step or epoch
        summary.json    final metrics and the run's status

A run's status is "running" until it ends as "finished", "failed" or
"interrupted", so an interrupted run is never reported as finished.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = Path("runs")


def utc_timestamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


class RunRecord:
    """The folder of one run; workloads call `log` for each step or epoch."""

    def __init__(self, directory: Path | None, workload: str, config: dict[str, Any]):
        self.directory = directory
        self.workload = workload
        self.config = config
        self.metrics: list[dict[str, Any]] = []
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=False)
            write_json(directory / "config.json", {"workload": workload, **config})
            write_json(directory / "summary.json", {"workload": workload, "status": "running"})

    @classmethod
    def create(cls, runs_dir: Path, workload: str, config: dict[str, Any]) -> "RunRecord":
        """Start a record in a new folder named by the UTC time and the workload."""
        stem = f"{utc_timestamp()}-{workload}"
        directory = runs_dir / stem
        suffix = 2
        while directory.exists():
            directory = runs_dir / f"{stem}-{suffix}"
            suffix += 1
        return cls(directory, workload, config)

    @classmethod
    def disabled(cls, workload: str) -> "RunRecord":
        """A record that keeps metrics in memory and writes nothing (--no-record)."""
        return cls(None, workload, {})

    def log(self, **values: Any) -> None:
        """Append one line of metrics, such as epoch=1, loss=4.2."""
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(), **values}
        self.metrics.append(entry)
        if self.directory is not None:
            with open(self.directory / "metrics.jsonl", "a", encoding="utf-8") as stream:
                stream.write(json.dumps(entry, default=str) + "\n")

    def close(self, status: str, summary: dict[str, Any] | None = None) -> None:
        """Write summary.json with the final status ("finished", "failed" or "interrupted")."""
        if self.directory is None:
            return
        write_json(self.directory / "summary.json", {"workload": self.workload, "status": status, **(summary or {})})
        logger.info("Run record: %s (%s)", self.directory, status)
