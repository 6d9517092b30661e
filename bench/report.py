"""`make bench`: every benchmark in one run, then `bench/REPORT.md`, `bench/report.json` and plots.

Each benchmark runs as its own process with `--json` (`bench/results.py`), its output shown
as it goes. The self-contained ones always run (the gateway over a stub engine, the safety
layer, the RAG store at 1k and 10k chunks, the API fuzz); the ones that measure a running
service (`make up`: the gateway over real vLLM, swap and rollback under load, the canary's
time to a decision, a learning cycle with its time per phase and the taught facts before and
after) run when its gateway answers `/readyz` at `--gateway`, and are otherwise listed in the
report as not run, with why. A benchmark that fails is reported as failed with the end of its
output; the report is written either way, and the exit status is 1 if any failed.

    .venv/bin/python bench/report.py                 # everything (about an hour on 2 cores)
    .venv/bin/python bench/report.py --quick         # small runs of each: a smoke test
    .venv/bin/python bench/report.py --only rag_latency,swap
    .venv/bin/python bench/report.py --from bench/report.json   # draw it again, no measuring
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.report_markdown import render
from bench.report_plots import draw
from bench.results import machine

BENCH = Path(__file__).resolve().parent
OUTPUT_TAIL_LINES = 30  # of a failed benchmark's output, in the report


@dataclass(frozen=True)
class Step:
    """One benchmark: its script, its arguments (full and `--quick`), and whether it needs
    a running service."""

    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    live: bool = False
    writes_json: bool = True


STEPS = (
    Step(
        "gateway_overhead",
        ("--requests", "2000", "--concurrency", "1,8", "--stream-concurrency", "16"),
        (
            "--requests",
            "100",
            "--warmup",
            "20",
            "--concurrency",
            "1",
            "--stream-concurrency",
            "4",
            "--time-limit",
            "120",
        ),
    ),
    Step("safety_overhead", ("--requests", "200"), ("--requests", "20", "--warmup", "5")),
    Step(
        "rag_latency",
        ("--sizes", "1000,10000"),
        ("--sizes", "100,300", "--queries", "20"),
    ),
    Step(
        "api_fuzz",
        ("--examples", "100", "--seeds", "0", "1", "2"),
        ("--examples", "3", "--seeds", "0"),
        writes_json=False,
    ),
    Step("answer_latency", ("--requests", "30"), ("--requests", "3"), live=True),
    Step("swap", ("--flips", "40"), ("--flips", "4"), live=True),
    Step(
        "canary",
        ("--modes", "split", "--max-duration-s", "600"),
        ("--modes", "split", "--scenario", "bad", "--max-duration-s", "120"),
        live=True,
    ),
    Step("learning", ("--facts", "12"), ("--facts", "4"), live=True),
)
NAMES = tuple(step.name for step in STEPS)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.source is not None:
        report = json.loads(args.source.read_text())
    else:
        report = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "quick": args.quick,
            "benches": _run_all(args),
        }
    runs = report["benches"]
    args.output.mkdir(parents=True, exist_ok=True)
    plots = draw(report, args.output / "plots")
    (args.output / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (args.output / "REPORT.md").write_text(render(report, plots, args.output))
    failed = [name for name, run in runs.items() if run["status"] == "failed"]
    print(f"\nwrote {args.output / 'REPORT.md'}, report.json and {len(plots)} plot(s)")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--quick", action="store_true", help="small runs: a smoke test")
    parser.add_argument("--only", default=None, help=f"comma-separated, of: {', '.join(NAMES)}")
    parser.add_argument("--output", type=Path, default=BENCH, help="where REPORT.md goes")
    parser.add_argument(
        "--from", dest="source", type=Path, default=None,
        help="draw the report from this report.json instead of measuring",
    )  # fmt: skip
    parser.add_argument("--timeout-s", type=float, default=3600, help="per benchmark")
    args = parser.parse_args(argv)
    args.names = NAMES if args.only is None else tuple(n.strip() for n in args.only.split(","))
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(NAMES)}")
    return args


def _run_all(args: argparse.Namespace) -> dict[str, Any]:
    live_reason = _why_not_live(args.gateway)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="twinloop-report-") as tmp:
        for step in STEPS:
            if step.name not in args.names:
                continue
            if step.live and live_reason:
                runs[step.name] = {"status": "not run", "why": live_reason}
                print(f"\n== {step.name}: not run: {live_reason}", flush=True)
                continue
            runs[step.name] = _run(step, args, Path(tmp))
    return runs


def _run(step: Step, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    script = BENCH / f"{step.name}.py"
    command = [sys.executable, str(script), *(step.quick if args.quick else step.full)]
    if step.live:
        command += ["--gateway", args.gateway]
    document = tmp / f"{step.name}.json"
    if step.writes_json:
        command += ["--json", str(document)]
    print(f"\n== {step.name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                print(line, end="", flush=True)
                tail.append(line.rstrip("\n"))
            code = process.wait(timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        code = -1
        tail.append(f"stopped after {args.timeout_s:.0f} s")
    seconds = time.monotonic() - started
    shown = [f"bench/{script.name}", *command[2:]]
    if step.writes_json:
        shown = shown[:-2]  # the temporary --json path
    run: dict[str, Any] = {"command": " ".join(shown), "seconds": seconds}
    if code != 0:
        return {**run, "status": "failed", "exit_code": code, "output_tail": list(tail)}
    if not step.writes_json:
        return {**run, "status": "passed", "output_tail": list(tail)[-5:]}
    measured = json.loads(document.read_text())
    return {**run, "status": "measured", **measured}


def _why_not_live(gateway: str) -> str | None:
    try:
        ready = httpx.get(f"{gateway}/readyz", timeout=5)
    except httpx.HTTPError as e:
        return f"no running service at {gateway} ({type(e).__name__}); start it with `make up`"
    if ready.status_code != 200:
        return f"the service at {gateway} is not ready ({ready.status_code})"
    return None


if __name__ == "__main__":
    sys.exit(main())
