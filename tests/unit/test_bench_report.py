"""`bench/report.py` draws REPORT.md, report.json and plots from one run's figures: every
measured figure appears, a benchmark that did not run says why, one that failed shows its
output, and the exit status says whether any failed (drawn here from a stored run with
`--from`; the benchmarks themselves are run by `make bench`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _latency(p50: float, p99: float) -> dict[str, Any]:
    points = {"1": p50 / 2, "50": p50, "90": (p50 + p99) / 2, "99": p99}
    return {"count": 100, "p50_ms": p50, "p90_ms": p99 * 0.9, "p99_ms": p99,
            "min_ms": p50 / 2, "distribution_ms": points}  # fmt: skip


def _report() -> dict[str, Any]:
    overhead_rows = [
        {"target": "direct", "stream": False, "concurrency": 8, "ok": 100, "failed": 0,
         "requests_per_s": 3934.0, "events_per_s": None, "latency": _latency(1.9, 4.0),
         "other_cpu_pct": 1.0},
        {"target": "gateway-general", "stream": False, "concurrency": 8, "ok": 100,
         "failed": 0, "requests_per_s": 1306.0, "events_per_s": None,
         "latency": _latency(5.2, 9.0), "other_cpu_pct": 1.0,
         "throughput_vs_direct": 0.332, "added_p50_ms_vs_direct": 3.3,
         "added_p99_ms_vs_direct": 5.0},
    ]  # fmt: skip
    learning = {
        "facts": 4, "examples": 12, "state": "awaiting_canary", "seconds": 612.0,
        "step_seconds": {"train": 400.5, "qa": 150.25},
        "adapters": {"general": {"steps": 24, "seconds_per_step": 3.5}},
        "rounds": [{"round": 1, "passed": True, "seconds": 150.25, "reasons": ["all good"],
                    "categories": {"feedback": {"shadow": 0.875, "active": 0.125,
                                                "heldout": 8, "floor": 0.3}}}],
    }  # fmt: skip
    machine = {"cpu": "Test CPU", "cores": 2, "usable_cores": 2, "memory_gib": 24.0,
               "load_average": [0.5, 0.4, 0.3], "gpu": None, "platform": "Linux",
               "python": "3.11.7", "packages": {"torch": "2.13.0"},
               "commit": "abc1234"}  # fmt: skip
    return {
        "generated_at": "2026-12-04T16:00:00+00:00",
        "machine": machine,
        "quick": False,
        "benches": {
            "gateway_overhead": {
                "status": "measured", "command": "bench/gateway_overhead.py", "seconds": 60.0,
                "figures": {"upstream": "stub", "gateway_workers": 1, "database": "sqlite",
                            "requests_per_run": 100, "rows": overhead_rows},
            },
            "swap": {"status": "failed", "command": "bench/swap.py --flips 4", "seconds": 3.0,
                     "exit_code": 1, "output_tail": ["Traceback: the engine went away"]},
            "canary": {"status": "not run", "why": "no running service at http://x"},
            "learning": {"status": "measured", "command": "bench/learning.py", "seconds": 612.0,
                         "figures": learning},
        },
    }  # fmt: skip


def test_the_report_shows_every_figure_and_why_a_section_is_missing(tmp_path: Path) -> None:
    source = tmp_path / "stored.json"
    source.write_text(json.dumps(_report()))
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "report.py"), "--from", str(source),
         "--output", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # The stored run holds a failed benchmark, so the report is written and the exit is 1.
    assert done.returncode == 1, done.stderr
    assert "failed: swap" in done.stderr
    text = (out / "REPORT.md").read_text()
    assert "Test CPU, 2 usable of 2 cores" in text
    assert "| gateway-general | 8 | 1306 | 0.332 | - | 5.2 | 9 | 3.3 | 5 | 0 |" in text
    assert "**Failed** (exit status 1)" in text and "Traceback: the engine went away" in text
    assert "Not run: no running service at http://x." in text
    assert "ended **awaiting_canary** in 612 s" in text
    assert "| feedback | 0.125 | 0.875 | 8 | 0.3 |" in text
    assert "Not part of this run" in text  # rag_latency and the others were not in it
    assert json.loads((out / "report.json").read_text())["benches"]["swap"]["exit_code"] == 1
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == ["gateway_overhead.png", "learning.png"]
    assert all(f"plots/{name}" in text for name in plots)
