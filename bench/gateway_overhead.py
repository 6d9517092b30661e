"""What the gateway adds on top of an engine, measured side by side on loopback.

A stub engine answers vLLM's OpenAI API with a fixed reply at once (a stream: 64
one-word chunks), so every millisecond measured here is HTTP, JSON, validation, routing
and the answer's write — never generation. Every request asks a question of its own, so
no cache can answer it. Targets, each a server in its own process:

- ``direct`` / ``direct-stream``: the stub itself;
- ``proxy-aiohttp`` / ``proxy-stream``: a bare FastAPI app (no database) forwarding
  ``POST /v1/chat/completions`` to the stub with aiohttp (a stream relayed byte for byte):
  the least a Python gateway can do here, the reference of the ratio columns;
- ``proxy-httpx`` / ``proxy-lean`` (``proxy-lean-stream``): the same with httpx, and with
  twinloop's own client (``twinloop/engines/lean_http.py``, the gateway's default): the
  engine client's choice of library, measured side by side;
- ``gateway-general`` / ``gateway-auto`` / ``gateway-stream``: the real gateway
  (``api.app.create_app`` under uvicorn, SQLite in a temporary folder, both slots on the
  stub), ``POST /v1/chat/completions`` with ``model: general`` (a named domain), ``auto``
  (the router picks) and ``general`` streamed; ``gateway-answer``: ``POST /answer`` with a
  domain and no retrieval; ``gateway-cached``: one question asked again and again at
  temperature 0, answered by the answer cache after the first time (the only row a cache
  helps). Every one stores its answer before it returns.

The load generator (aiohttp, keep-alive, fixed concurrency) runs in this
process; the figures are loopback figures on a shared machine, to be compared
within one run, not taken as capacity numbers. The servers are in
``bench/overhead_servers.py``; processes, load, CPU accounting and the table
in ``bench/overhead_harness.py``.

Run: ``.venv/bin/python bench/gateway_overhead.py --requests 2000 --concurrency 1,8``
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import os
import platform
import shutil
import signal
import tempfile
import time
from contextlib import ExitStack
from typing import Any

import aiohttp

from bench.overhead_harness import (
    HTTP,
    LOOP,
    Run,
    Server,
    ServerPool,
    ServerStartError,
    Target,
    measure,
    new_loop,
    usable_cores,
    wait_healthy,
)
from bench.overhead_servers import (
    ANSWER,
    MODEL,
    STUB_KIND,
    gateway_settings,
    serve_gateway,
    serve_proxy,
    serve_stub,
)
from bench.results import add_json_option, latency_summary, write_results
from rag.backends import EmbeddingBackend
from rag.errors import ChromaServerError
from rag.server import ChromaServer
from twinloop.testing.ports import free_port

# `{n}`: every request asks its own question (Target.body_for), so no answer cache helps
# (but gateway-cached's, which is the cache-hit path).
QUESTION = "What is the capital of France? ({n})"
MESSAGES = [{"role": "user", "content": QUESTION}]
STREAM_BODY: dict[str, Any] = {"model": "general", "messages": MESSAGES, "stream": True}
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("direct", "stub", "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES}),
        Target("proxy-aiohttp", "proxy-aiohttp", "/v1/chat/completions",
               {"model": "general", "messages": MESSAGES}),
        Target("proxy-httpx", "proxy-httpx", "/v1/chat/completions",
               {"model": "general", "messages": MESSAGES}),
        Target("proxy-lean", "proxy-lean", "/v1/chat/completions",
               {"model": "general", "messages": MESSAGES}),
        Target("gateway-general", "gateway", "/v1/chat/completions",
               {"model": "general", "messages": MESSAGES}),
        Target("gateway-answer", "gateway", "/answer",
               {"question": QUESTION, "domain": "general", "use_rag": False}),
        Target("gateway-auto", "gateway", "/v1/chat/completions",
               {"model": "auto", "messages": MESSAGES}),
        # The same question every time at temperature 0: answered by the answer cache.
        Target("gateway-cached", "gateway", "/v1/chat/completions",
               {"model": "general", "temperature": 0,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]}),
        Target("direct-stream", "stub", "/v1/chat/completions",
               {**STREAM_BODY, "model": MODEL}, stream=True),
        Target("proxy-stream", "proxy-aiohttp", "/v1/chat/completions", STREAM_BODY, stream=True),
        Target("proxy-lean-stream", "proxy-lean", "/v1/chat/completions", STREAM_BODY,
               stream=True),
        Target("gateway-stream", "gateway", "/v1/chat/completions", STREAM_BODY, stream=True),
    )
}  # fmt: skip
# The reference of the ratio columns: the least a Python gateway can do on this box, a bare
# FastAPI app forwarding with aiohttp to the same stub (streams: relaying the bytes).
BASELINE = {False: "proxy-aiohttp", True: "proxy-stream"}
UPSTREAM = "stub"  # the engine every server forwards to
HEALTH_PATH = {"stub": "/health", "gateway": "/healthz"}  # the proxies: /health too
EXPECTED = ANSWER.encode()  # every good reply carries the stub's answer


def _header(args: argparse.Namespace) -> str:
    logical = os.cpu_count() or 0
    usable = usable_cores()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    import fastapi
    import httpx
    import uvicorn

    return "\n".join(
        [
            "twinloop gateway overhead (loopback, stub engine; no generation measured)",
            f"machine: {usable} usable core(s) of {logical}, {platform.machine()}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
            f"load average before start: {load}",
            f"NOTE: the load generator (this process), the stub engine and the server under "
            f"test all share these {usable} core(s) and compete for them; absolute req/s are "
            "lower than on a dedicated box. Compare rows within one run.",
            f"servers: uvicorn {uvicorn.__version__} (1 worker, loop={LOOP}, http={HTTP}, "
            f"no access log), fastapi {fastapi.__version__}, httpx {httpx.__version__}, "
            f"aiohttp {aiohttp.__version__}; stub: {STUB_KIND}; load generator: aiohttp, "
            f"keep-alive, loop={LOOP}",
            f"gateway: {args.gateway_workers} worker(s), "
            f"{'PostgreSQL' if args.database_url else 'SQLite (synchronous=FULL)'}, "
            f"embedding backend {args.embedding_backend}",
            f"per run: {args.warmup} warm-up + {args.requests} measured requests; "
            f"{args.rounds} round(s), targets taking turns, each row the median round; "
            f"cap {args.max_run_seconds:.0f}s per run, {args.time_limit:.0f}s overall; "
            "latencies over successful requests only",
            "+p50 ms / thr x: p50 minus the bare proxy's p50, req/s over the bare proxy's req/s "
            "(same level; streams: events/s over the byte-relaying proxy's); "
            "srv/stub/gen us: CPU microseconds per successful request spent by the server under "
            "test, the stub and the load generator; other%: CPU used meanwhile by processes "
            "outside this benchmark, share of all usable cores (high = figures disturbed)",
        ]
    )


# -- report ---------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


COLUMNS = (
    ("target", -15),
    ("ok", 6),
    ("fail", 5),
    ("req/s", 7),
    ("ev/s", 7),
    ("p50 ms", 7),
    ("p90 ms", 7),
    ("p99 ms", 7),
    ("+p50 ms", 8),
    ("thr x", 6),
    ("srv us", 7),
    ("stub us", 7),
    ("gen us", 7),
    ("other%", 6),
)


def _row(cells: list[str]) -> str:
    return " ".join(
        f"{cell:<{-width}}" if width < 0 else f"{cell:>{width}}"
        for cell, (_, width) in zip(cells, COLUMNS, strict=True)
    )


def _table(runs: list[Run], concurrency: int, *, stream: bool = False) -> str:
    """One block per concurrency level; +p50 and thr x are relative to the bare proxy
    (`BASELINE`). Streams: p50/p90/p99 are of the time to the first event."""
    header = _row([name for name, _ in COLUMNS])
    title = "streams (latency columns: time to first event)" if stream else "requests"
    lines = [f"{title}, concurrency {concurrency}", header, "-" * len(header)]
    base = next((r for r in runs if r.target == BASELINE[stream] and r.ok), None)
    pct = Run.ttft if stream else Run.pct
    base_p50 = pct(base, 50) if base is not None else None
    for run in runs:
        if run.skipped:
            lines.append(f"{run.target:<15} skipped: overall time limit reached")
            continue
        p50 = pct(run, 50)
        relative = base is not None and run is not base and p50 is not None
        throughput = (lambda r: r.events_per_s) if stream else (lambda r: r.rps)
        cpu = {k: f"{v:.0f}" for k, v in run.cpu_us.items()}
        cells = [
            run.target,
            str(run.ok),
            str(run.failed),
            f"{run.rps:.0f}",
            f"{run.events_per_s:.0f}" if stream else "-",
            _ms(p50),
            _ms(pct(run, 90)),
            _ms(pct(run, 99)),
            f"{p50 - base_p50:+.2f}" if relative and p50 is not None and base_p50 else "-",
            f"{throughput(run) / throughput(base):.3f}"
            if relative and base is not None and throughput(base)
            else "-",
            cpu.get("server", "-"),
            cpu.get("upstream", "-") if TARGETS[run.target].server != UPSTREAM else "=srv",
            cpu.get("loadgen", "-"),
            f"{run.other_cpu_pct:.0f}" if run.ok else "-",
        ]
        lines.append(_row(cells) + ("  (capped by time)" if run.capped else ""))
    lines += [f"  {r.target}: first failure: {r.first_failure}" for r in runs if r.first_failure]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per run")
    parser.add_argument("--warmup", type=int, default=200, help="discarded requests per run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs per target and level, the targets taking turns (A B C A B C ...); each "
        "row is the round with the median throughput",
    )
    parser.add_argument(
        "--concurrency", default="1,8", help="comma-separated in-flight request counts"
    )
    parser.add_argument(
        "--stream-concurrency", default="16", help="comma-separated in-flight stream counts"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {', '.join(TARGETS)}; `proxy-aiohttp` (streams: "
        "`proxy-stream`) is the reference of the +p50 and throughput-ratio columns",
    )
    parser.add_argument(
        "--database-url",
        help="the gateway's database (a PostgreSQL one to throw away: migrated, then written "
        "to); default SQLite in a temporary folder",
    )
    parser.add_argument(
        "--gateway-workers",
        type=int,
        default=1,
        help="gateway processes (gateway.workers; more than one needs --database-url "
        "postgresql://...)",
    )
    parser.add_argument(
        "--embedding-backend",
        choices=[b.value for b in EmbeddingBackend],
        default=EmbeddingBackend.AUTO.value,
        help="the gateway's embeddings.backend (what `model: auto` routes with)",
    )
    parser.add_argument("--max-run-seconds", type=float, default=60.0, help="cap per run")
    parser.add_argument("--time-limit", type=float, default=900.0, help="cap on all runs")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="per server")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="per request")
    add_json_option(parser)
    args = parser.parse_args(argv)
    try:
        args.concurrency_levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
        args.stream_levels = [int(c) for c in args.stream_concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency, --stream-concurrency: comma-separated integers, e.g. 1,8")
    args.target_names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.target_names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    if args.gateway_workers > 1 and not (args.database_url or "").startswith("postgres"):
        parser.error("--gateway-workers > 1 needs --database-url postgresql://...")
    if args.requests < 1 or args.warmup < 0 or args.rounds < 1 or not args.concurrency_levels:
        parser.error(
            "--requests >= 1, --warmup >= 0, --rounds >= 1, at least one concurrency level"
        )
    if min(args.concurrency_levels + args.stream_levels) < 1:
        parser.error("--concurrency levels must be >= 1")
    return args


def _start_servers(
    pool: ServerPool,
    names: list[str],
    data_dir: Path,
    timeout_s: float,
    stack: ExitStack,
    database_url: str | None = None,
    workers: int = 1,
    embedding_backend: str = EmbeddingBackend.AUTO.value,
) -> None:
    needed = {TARGETS[n].server for n in names}
    stub = pool.start(UPSTREAM, serve_stub, timeout_s=timeout_s)
    if "gateway" in needed:
        # The gateway opens its knowledge store at start: give it a Chroma server of its own.
        chroma_port = free_port()
        chroma = ChromaServer(gateway_settings(data_dir, stub.port, chroma_port, database_url))
        chroma.start()
        stack.callback(chroma.stop)
        chroma.wait_healthy(timeout_s)
        pool.start(
            "gateway", serve_gateway, stub.port, str(data_dir), chroma_port, database_url,
            workers, embedding_backend, timeout_s=timeout_s, daemon=workers == 1,
        )  # fmt: skip
    for library in ("httpx", "aiohttp", "lean"):
        if f"proxy-{library}" in needed:  # proxy-stream is served by proxy-aiohttp
            pool.start(f"proxy-{library}", serve_proxy, stub.port, library, timeout_s=timeout_s)


async def _bench(
    args: argparse.Namespace, servers: dict[str, Server], started: float
) -> list[tuple[bool, list[Run]]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as probe:
        for server in servers.values():
            path = HEALTH_PATH.get(server.name, "/health")
            await wait_healthy(probe, server, path, args.startup_timeout)
    global_deadline = started + args.time_limit
    levels_run: list[tuple[bool, list[Run]]] = []
    for stream, levels in ((False, args.concurrency_levels), (True, args.stream_levels)):
        names = [n for n in args.target_names if TARGETS[n].stream == stream]
        if names:
            for concurrency in levels:
                runs = await _level(args, servers, names, concurrency, stream, global_deadline)
                levels_run.append((stream, runs))
    return levels_run


async def _level(
    args: argparse.Namespace,
    servers: dict[str, Server],
    names: list[str],
    concurrency: int,
    stream: bool,
    global_deadline: float,
) -> list[Run]:
    rounds: dict[str, list[Run]] = {name: [] for name in names}
    for round_no in range(1, args.rounds + 1):
        for name in names:
            if time.monotonic() >= global_deadline:
                continue
            print(
                f"  running {name} at concurrency {concurrency} (round {round_no}) ...",
                file=sys.stderr,
            )
            run = await measure(
                TARGETS[name],
                servers,
                upstream=UPSTREAM,
                expected=EXPECTED,
                requests=args.requests,
                warmup=args.warmup,
                concurrency=concurrency,
                run_cap_s=args.max_run_seconds,
                global_deadline=global_deadline,
                request_timeout_s=args.request_timeout,
            )
            rounds[name].append(run)
    runs = [_median_run(name, concurrency, rounds[name], stream) for name in names]
    print("\n" + _table(runs, concurrency, stream=stream), flush=True)
    return runs


def _median_run(name: str, concurrency: int, runs: list[Run], stream: bool) -> Run:
    """The round with the median throughput: one real run, not a blend, and one that a
    burst of other work on the machine during a single round does not pick."""
    if not runs:
        return Run(target=name, concurrency=concurrency, skipped=True)
    ranked = sorted(runs, key=(lambda r: r.events_per_s) if stream else (lambda r: r.rps))
    return ranked[(len(ranked) - 1) // 2]


def _figures(args: argparse.Namespace, levels: list[tuple[bool, list[Run]]]) -> dict[str, Any]:
    """Per run: throughput and latency, and against the bare proxy and the stub itself at
    the same level the added p50/p99 and the throughput ratio (what REPORT.md shows)."""
    rows = []
    for stream, runs in levels:
        pct = Run.ttft if stream else Run.pct
        throughput = (lambda r: r.events_per_s) if stream else (lambda r: r.rps)
        by_name = {r.target: r for r in runs if r.ok}
        direct = by_name.get("direct-stream" if stream else "direct")
        proxy = by_name.get(BASELINE[stream])
        for run in runs:
            if not run.ok:
                continue
            row: dict[str, Any] = {
                "target": run.target,
                "stream": stream,
                "concurrency": run.concurrency,
                "ok": run.ok,
                "failed": run.failed,
                "requests_per_s": run.rps,
                "events_per_s": run.events_per_s if stream else None,
                "latency": latency_summary(run.ttft_ms if stream else run.latencies_ms),
                "other_cpu_pct": run.other_cpu_pct,
            }
            for name, ref in (("direct", direct), ("proxy", proxy)):
                if ref is not None and ref is not run and throughput(ref):
                    row[f"throughput_vs_{name}"] = throughput(run) / throughput(ref)
                    row[f"added_p50_ms_vs_{name}"] = _difference(pct(run, 50), pct(ref, 50))
                    row[f"added_p99_ms_vs_{name}"] = _difference(pct(run, 99), pct(ref, 99))
            rows.append(row)
    return {
        "upstream": STUB_KIND,
        "gateway_workers": args.gateway_workers,
        "database": "postgresql" if args.database_url else "sqlite",
        "embedding_backend": args.embedding_backend,
        "requests_per_run": args.requests,
        "rounds": args.rounds,
        "rows": rows,
    }


def _difference(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.monotonic()
    print(_header(args), flush=True)
    pool = ServerPool()
    data_dir = Path(tempfile.mkdtemp(prefix="twinloop-bench-"))
    # SIGTERM stops the run like Ctrl-C does, so the `finally` below always stops the children.
    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    chroma_stop = ExitStack()
    try:
        _start_servers(
            pool, args.target_names, data_dir, args.startup_timeout, chroma_stop,
            args.database_url, args.gateway_workers, args.embedding_backend,
        )  # fmt: skip
        with asyncio.Runner(loop_factory=new_loop) as runner:
            levels = runner.run(_bench(args, pool.servers, started))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    except (ServerStartError, ChromaServerError) as e:
        print(f"\nserver failed to start: {e}", file=sys.stderr)
        return 1
    finally:
        pool.stop_all()
        chroma_stop.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous_term)
    write_results(args.json, "gateway_overhead", _figures(args, levels))
    print(f"\ntotal wall time {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
