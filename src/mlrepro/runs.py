"""Run records: every workload run keeps its config, metrics and summary under runs/.

    runs/<UTC time>-<workload>/
        config.json     every argument of the run
        env.json        the environment report (mlrepro.report) with the lock's sha256
        metrics.jsonl   one JSON object per logged step or epoch
        summary.json    final metrics and the run's status

A run's status is "running" until it ends as "finished", "failed" or
"interrupted", so an interrupted run is never reported as finished.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = Path("runs")


def utc_timestamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def environment_facts() -> dict[str, Any]:
    """Return the environment report, with device facts for the frameworks this run imported.

    Frameworks the run did not import stay out, so closing a record costs no import.
    """
    from mlrepro import report

    facts = report.collect(include_frameworks=False)
    installed = report.installed_versions()
    if "tensorflow" in sys.modules:
        facts["tensorflow"] = report.tensorflow_facts(installed)
    if "torch" in sys.modules:
        facts["torch"] = report.torch_facts()
    return facts


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
        """Create a record that keeps metrics in memory and writes nothing (--no-record)."""
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
        write_json(self.directory / "env.json", environment_facts())
        try:
            plot_metrics(self.directory)
        except Exception as error:  # a broken plot must not hide the run's own result
            logger.warning("Could not plot %s: %s", self.directory / "metrics.jsonl", error)
        logger.info("Run record: %s (%s)", self.directory, status)


# --- Reading records back: plots, listing and comparison ---------------------------------

X_AXIS_KEYS = ("epoch", "step", "run")


def read_metrics(directory: Path) -> list[dict[str, Any]]:
    path = directory / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def plot_metrics(directory: Path) -> Path | None:
    """Draw every numeric metric of metrics.jsonl against epoch, step or run; return the PNG path.

    Losses go in the left panel and the other metrics (accuracy, perplexity,
    latency) in the right one. Returns None when there is nothing to draw.
    """
    series: dict[str, dict[str, list[float]]] = {}
    for entry in read_metrics(directory):
        x_key = next((key for key in X_AXIS_KEYS if key in entry), None)
        if x_key is None:
            continue
        for key, value in entry.items():
            if key in X_AXIS_KEYS or key == "time" or not isinstance(value, (int, float)):
                continue
            points = series.setdefault(f"{key} by {x_key}", {"x": [], "y": []})
            points["x"].append(entry[x_key])
            points["y"].append(value)
    if not series:
        return None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = {name: points for name, points in series.items() if "loss" in name}
    others = {name: points for name, points in series.items() if "loss" not in name}
    panels = [group for group in (losses, others) if group]
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, group in zip(axes[0], panels):
        for name, points in group.items():
            axis.plot(points["x"], points["y"], marker="o", label=name)
        axis.set_xlabel(" / ".join(sorted({name.rsplit(" by ", 1)[1] for name in group})))
        axis.set_ylabel("loss" if group is losses else "value")
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle(directory.name)
    figure.tight_layout()
    path = directory / "plot.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def find_run(runs_dir: Path, name: str) -> Path:
    """Resolve a run given as a folder path, a folder name under runs_dir, or a unique prefix of one."""
    from mlrepro.errors import UsageError

    for candidate in (Path(name), runs_dir / name):
        if candidate.is_dir():
            return require_record(candidate)
    matches = sorted(path for path in runs_dir.glob(f"{name}*") if (path / "config.json").exists())
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"run {name!r} not found in {runs_dir}; `mlrepro runs list` shows the runs")
    raise UsageError(f"run {name!r} matches {len(matches)} runs in {runs_dir}; give more of its name")


def require_record(directory: Path) -> Path:
    """Return directory if it is a run record (it has config.json), else raise UsageError."""
    from mlrepro.errors import UsageError

    if not (directory / "config.json").exists():
        raise UsageError(f"{directory} is not a run record (it has no config.json); `mlrepro runs list` shows the runs")
    return directory


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Return one row per run folder, oldest first: name, workload, status and final metrics."""
    rows = []
    for directory in sorted(path for path in runs_dir.glob("*") if (path / "summary.json").exists()):
        summary = read_json(directory / "summary.json")
        metrics = {key: value for key, value in summary.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
        rows.append({"run": directory.name, "workload": summary.get("workload", "?"), "status": summary.get("status", "?"), "metrics": metrics})
    return rows


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys, so that two records can be compared key by key."""
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def compare_runs(first: Path, second: Path) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Return the differing keys of config.json, env.json and summary.json of two runs."""
    differences = {}
    for name in ("config", "env", "summary"):
        a = flatten(read_json(first / f"{name}.json"))
        b = flatten(read_json(second / f"{name}.json"))
        differences[name] = {key: (a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)}
    return differences
