"""What the gateway adds on top of an engine, measured side by side on loopback.

A stub engine answers vLLM's OpenAI API with a fixed reply at once, so every
millisecond measured here is HTTP, JSON, validation, routing and the SQLite
write — never generation. Targets, each a server in its own process:

- ``direct``: the stub itself (the baseline every other row is compared with);
- ``gateway-answer`` / ``gateway-chat``: the real gateway (``api.app.create_app``
  under uvicorn, SQLite in a temporary folder, both slots on the stub),
  ``POST /answer`` and ``POST /v1/chat/completions``; both store every answer;
- ``proxy-httpx`` / ``proxy-aiohttp``: a bare FastAPI app (no database) that
  forwards ``POST /v1/chat/completions`` to the stub with one or the other
  client library — the comparison behind the engine client's choice of httpx
  (see ``twinloop/engines/client.py``).

The load generator (aiohttp, keep-alive, fixed concurrency) runs in this
process; the figures are loopback figures on a shared machine, to be compared
within one run, not taken as capacity numbers.

Run: ``.venv/bin/python bench/gateway_overhead.py --requests 2000 --concurrency 1,16``
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

import aiohttp
import psutil
from fastapi import FastAPI, Request  # module level: the route's annotations must resolve

HOST = "127.0.0.1"
MODEL = "smollm2-135m-instruct"  # the gateway's default served name
QUESTION = "What is the capital of France?"
LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
HTTP = "httptools" if importlib.util.find_spec("httptools") else "h11"
STUB_KIND = "raw asyncio + httptools" if HTTP == "httptools" else "aiohttp.web"


# -- what is measured -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    server: str  # which server process answers it
    path: str
    body: dict[str, Any]


CHAT_BODY: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("direct", "stub", "/v1/chat/completions", {**CHAT_BODY, "model": MODEL}),
        Target("gateway-answer", "gateway", "/answer", {"question": QUESTION}),
        Target("gateway-chat", "gateway", "/v1/chat/completions", CHAT_BODY),
        Target("proxy-httpx", "proxy-httpx", "/v1/chat/completions", CHAT_BODY),
        Target("proxy-aiohttp", "proxy-aiohttp", "/v1/chat/completions", CHAT_BODY),
    )
}
HEALTH_PATH = {"stub": "/health", "gateway": "/healthz"}  # the proxies: /health too
EXPECTED = b"Paris."  # every good reply carries the stub's answer


# -- child processes: common ----------------------------------------------------------


def _child_prologue(parent_pid: int) -> None:
    """Exit when the parent is gone, even if it was killed too hard to clean up."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _listen_and_report(conn: Connection) -> socket.socket:
    """Bind a free loopback port here (no race with other programs) and tell the parent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(2048)
    conn.send(sock.getsockname()[1])
    conn.close()
    return sock


def _new_loop() -> asyncio.AbstractEventLoop:
    if LOOP == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _serve_asgi(app: Any, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        app, loop=LOOP, http=HTTP, access_log=False, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)  # uvicorn has logged why (lifespan startup failed, most likely)


# -- the stub engine ------------------------------------------------------------------


def _http_response(status: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _stub_payloads() -> dict[tuple[str, str], dict[str, Any]]:
    created = int(time.time())
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    chat = {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": created,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris."},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }
    completion = {
        "id": "cmpl-stub",
        "object": "text_completion",
        "created": created,
        "model": MODEL,
        "choices": [{"index": 0, "text": " Paris.", "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
    }
    card = {"id": MODEL, "object": "model", "created": created, "owned_by": "vllm", "root": MODEL}
    return {
        ("POST", "/v1/chat/completions"): chat,
        ("POST", "/v1/completions"): completion,
        ("GET", "/health"): {},
        ("GET", "/v1/models"): {"object": "list", "data": [card]},
    }


class _StubProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, pre-encoded replies; the request body is never parsed."""

    def __init__(self, replies: dict[tuple[bytes, bytes], bytes], not_found: bytes) -> None:
        import httptools

        self._replies = replies
        self._not_found = not_found
        self._parser = httptools.HttpRequestParser(self)
        self._error = httptools.HttpParserError
        self._url = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except self._error:
            if self._transport is not None:
                self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0]
        self._url = b""
        reply = self._replies.get((self._parser.get_method(), path), self._not_found)
        if self._transport is not None:
            self._transport.write(reply)
            if not self._parser.should_keep_alive():
                self._transport.close()


def _serve_stub(conn: Connection, parent_pid: int) -> None:
    _child_prologue(parent_pid)
    sock = _listen_and_report(conn)
    payloads = _stub_payloads()
    if HTTP != "httptools":
        _serve_stub_aiohttp(sock, payloads)
        return
    replies = {
        (method.encode(), path.encode()): _http_response("200 OK", payload)
        for (method, path), payload in payloads.items()
    }
    not_found = _http_response("404 Not Found", {"error": "not found"})
    loop = _new_loop()
    loop.run_until_complete(
        loop.create_server(lambda: _StubProtocol(replies, not_found), sock=sock)
    )
    loop.run_forever()


def _serve_stub_aiohttp(
    sock: socket.socket, payloads: dict[tuple[str, str], dict[str, Any]]
) -> None:
    from aiohttp import web

    app = web.Application()
    for (method, path), payload in payloads.items():
        body = json.dumps(payload).encode()

        async def reply(_: web.Request, body: bytes = body) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        app.router.add_route(method, path, reply)
    web.run_app(app, sock=sock, print=None, handle_signals=False, access_log=None)


# -- the gateway ----------------------------------------------------------------------


def _serve_gateway(conn: Connection, parent_pid: int, stub_port: int, data_dir: str) -> None:
    _child_prologue(parent_pid)
    sock = _listen_and_report(conn)
    from api.app import create_app
    from twinloop.db.migrate import upgrade
    from twinloop.settings import EngineSettings, Settings

    settings = Settings(
        data_dir=Path(data_dir),
        log_level="WARNING",
        engines=EngineSettings(blue_port=stub_port, green_port=stub_port, external=True),
    )
    upgrade(settings.sqlalchemy_url)
    _serve_asgi(create_app(settings), sock)


# -- the bare proxies -----------------------------------------------------------------

Forward = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _serve_proxy(conn: Connection, parent_pid: int, stub_port: int, library: str) -> None:
    _child_prologue(parent_pid)
    sock = _listen_and_report(conn)
    _serve_asgi(_proxy_app(f"http://{HOST}:{stub_port}", library), sock)


def _proxy_app(upstream: str, library: str) -> Any:
    """Per call, what the gateway's engine client does: JSON out, JSON back, a dict returned."""
    import httpx

    url = f"{upstream}/v1/chat/completions"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if library == "httpx":
            # The same limits and timeouts as twinloop.runtime's engine client.
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
            timeouts = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=10.0)
            async with httpx.AsyncClient(limits=limits, timeout=timeouts) as client:

                async def forward_httpx(body: dict[str, Any]) -> dict[str, Any]:
                    response = await client.post(url, json=body)
                    response.raise_for_status()
                    result: dict[str, Any] = response.json()
                    return result

                app.state.forward = forward_httpx
                yield
        else:
            connector = aiohttp.TCPConnector(limit=256)
            timeout = aiohttp.ClientTimeout(sock_connect=5.0, sock_read=300.0)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

                async def forward_aiohttp(body: dict[str, Any]) -> dict[str, Any]:
                    async with session.post(url, json=body) as response:
                        response.raise_for_status()
                        result: dict[str, Any] = await response.json()
                        return result

                app.state.forward = forward_aiohttp
                yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        forward: Forward = request.app.state.forward
        return await forward(await request.json())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


# -- the parent's side of the servers -------------------------------------------------


@dataclass
class Server:
    name: str
    process: BaseProcess
    port: int


class ServerStartError(RuntimeError):
    pass


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Children start with SIGINT ignored (inherited), so Ctrl-C reaches only the parent,
    which then stops them in order. uvicorn installs its own handler and exits cleanly."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class ServerPool:
    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self.servers: dict[str, Server] = {}

    def start(self, name: str, fn: Callable[..., None], *args: Any, timeout_s: float) -> Server:
        receive, send = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=fn, args=(send, os.getpid(), *args), name=f"bench-{name}", daemon=True
        )
        with _sigint_ignored():
            process.start()
        send.close()
        deadline = time.monotonic() + timeout_s
        while not receive.poll(0.1):
            if not process.is_alive() or time.monotonic() > deadline:
                receive.close()
                _stop([process])
                raise ServerStartError(f"{name}: no port reported (exit code {process.exitcode})")
        port: int = receive.recv()
        receive.close()
        server = Server(name=name, process=process, port=port)
        self.servers[name] = server
        return server

    def stop_all(self) -> None:
        _stop([s.process for s in self.servers.values()])
        self.servers.clear()


def _stop(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + 5.0
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)


async def _wait_healthy(session: aiohttp.ClientSession, server: Server, timeout_s: float) -> None:
    url = f"http://{HOST}:{server.port}{HEALTH_PATH.get(server.name, '/health')}"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not server.process.is_alive():
            raise ServerStartError(
                f"{server.name} exited with code {server.process.exitcode} while starting "
                "(its traceback is above)"
            )
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except aiohttp.ClientError as e:
            last = repr(e)
        await asyncio.sleep(0.1)
    raise ServerStartError(f"{server.name} not healthy after {timeout_s:.0f}s: {last}")


# -- load -----------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    first_failure: str | None = None
    elapsed_s: float = 0.0
    capped: bool = False
    skipped: bool = False
    cpu_us: dict[str, float] = field(default_factory=dict)  # per successful request
    other_cpu_pct: float = 0.0  # CPU used by processes not ours, share of all usable cores

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def pct(self, q: int) -> float | None:
        if not self.latencies_ms:
            return None
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


async def _load(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    requests: int,
    concurrency: int,
    deadline: float,
    run: Run,
) -> None:
    """`requests` POSTs, `concurrency` at a time, each worker on its own kept-alive connection."""
    issued = 0
    headers = {"Content-Type": "application/json"}

    async def worker() -> None:
        nonlocal issued
        while issued < requests:
            if time.monotonic() > deadline:
                run.capped = True
                return
            issued += 1
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as e:
                status, payload = 0, repr(e).encode()
            if status == 200 and EXPECTED in payload:
                run.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                run.failed += 1
                problem = f"HTTP {status}: {payload[:200]!r}" if status else payload.decode()
                run.first_failure = run.first_failure or problem

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _cpu_s(pid: int) -> float:
    """CPU time of a whole process, dead threads included.

    Linux: the process's CPU clock (nanoseconds); elsewhere psutil, whose
    user+system times tick at 10 ms and need many requests to mean much.
    """
    if _clock_getcpuclockid is not None:
        clock = ctypes.c_int()
        if _clock_getcpuclockid(pid, ctypes.byref(clock)) == 0:
            return time.clock_gettime(clock.value)
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _cpu_sample(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each server, of this process (`loadgen`) and of the machine."""
    sample = {name: _cpu_s(pid) for name, pid in pids.items()}
    sample["loadgen"] = time.process_time()
    machine = psutil.cpu_times()
    # irq/softirq/steal are left out: loopback networking lands there, not in any process.
    sample["machine"] = machine.user + machine.nice + machine.system
    return sample


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _find_clock_getcpuclockid() -> Any:
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    return getattr(libc, "clock_getcpuclockid", None)


_clock_getcpuclockid = _find_clock_getcpuclockid()


async def _measure(
    target: Target,
    servers: dict[str, Server],
    *,
    requests: int,
    warmup: int,
    concurrency: int,
    run_cap_s: float,
    global_deadline: float,
    request_timeout_s: float,
) -> Run:
    run = Run(target=target.name, concurrency=concurrency)
    server = servers[target.server]
    url = f"http://{HOST}:{server.port}{target.path}"
    body = json.dumps(target.body).encode()
    deadline = min(time.monotonic() + run_cap_s, global_deadline)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = Run(target=target.name, concurrency=concurrency)
        load = functools.partial(_load, session, url, body, concurrency=concurrency)
        await load(requests=warmup, deadline=deadline, run=warm)
        if warm.failed:
            run.failed, run.first_failure = warm.failed, f"in warm-up: {warm.first_failure}"
            return run
        pids = {s.name: s.process.pid for s in servers.values() if s.process.pid is not None}
        before = _cpu_sample(pids)
        started = time.perf_counter()
        await load(requests=requests, deadline=deadline, run=run)
        run.elapsed_s = time.perf_counter() - started
        used = {k: v - before[k] for k, v in _cpu_sample(pids).items()}
    ours = sum(used[name] for name in pids) + used["loadgen"]
    run.other_cpu_pct = 100 * max(0.0, used["machine"] - ours) / (run.elapsed_s * _usable_cores())
    if run.ok:
        per_request = {
            "server": used[target.server],
            "stub": used["stub"],
            "loadgen": used["loadgen"],
        }
        run.cpu_us = {k: v * 1e6 / run.ok for k, v in per_request.items()}
    return run


# -- report ---------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _header(args: argparse.Namespace) -> str:
    logical = os.cpu_count() or 0
    usable = _usable_cores()
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
            f"per run: {args.warmup} warm-up + {args.requests} measured requests, "
            f"cap {args.max_run_seconds:.0f}s per run, {args.time_limit:.0f}s overall; "
            "latencies over successful requests only",
            "+p50 ms / thr x: p50 minus direct's p50, req/s over direct's req/s (same level); "
            "srv/stub/gen us: CPU microseconds per successful request spent by the server under "
            "test, the stub and the load generator; other%: CPU used meanwhile by processes "
            "outside this benchmark, share of all usable cores (high = figures disturbed)",
        ]
    )


COLUMNS = (
    ("target", -15),
    ("ok", 6),
    ("fail", 5),
    ("req/s", 7),
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


def _table(runs: list[Run], concurrency: int) -> str:
    """One block per concurrency level; +p50 and thr x are relative to `direct`."""
    header = _row([name for name, _ in COLUMNS])
    lines = [f"concurrency {concurrency}", header, "-" * len(header)]
    base = next((r for r in runs if r.target == "direct" and r.ok), None)
    base_p50 = base.pct(50) if base is not None else None
    for run in runs:
        if run.skipped:
            lines.append(f"{run.target:<15} skipped: overall time limit reached")
            continue
        p50 = run.pct(50)
        relative = base is not None and run is not base and p50 is not None
        cpu = {k: f"{v:.0f}" for k, v in run.cpu_us.items()}
        cells = [
            run.target,
            str(run.ok),
            str(run.failed),
            f"{run.rps:.0f}",
            _ms(p50),
            _ms(run.pct(90)),
            _ms(run.pct(99)),
            f"{p50 - base_p50:+.2f}" if relative and p50 is not None and base_p50 else "-",
            f"{run.rps / base.rps:.3f}" if relative and base is not None else "-",
            cpu.get("server", "-"),
            cpu.get("stub", "-") if run.target != "direct" else "=srv",
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
        "--concurrency", default="1,16", help="comma-separated in-flight request counts"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {', '.join(TARGETS)}; `direct` is the baseline "
        "of the +p50 and throughput-ratio columns",
    )
    parser.add_argument("--max-run-seconds", type=float, default=60.0, help="cap per run")
    parser.add_argument("--time-limit", type=float, default=900.0, help="cap on all runs")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="per server")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="per request")
    args = parser.parse_args(argv)
    try:
        args.concurrency_levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency: comma-separated integers, e.g. 1,16")
    args.target_names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.target_names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    if args.requests < 1 or args.warmup < 0 or not args.concurrency_levels:
        parser.error("--requests >= 1, --warmup >= 0, at least one concurrency level")
    if min(args.concurrency_levels) < 1:
        parser.error("--concurrency levels must be >= 1")
    return args


def _start_servers(pool: ServerPool, names: list[str], data_dir: Path, timeout_s: float) -> None:
    needed = {TARGETS[n].server for n in names}
    stub = pool.start("stub", _serve_stub, timeout_s=timeout_s)
    if "gateway" in needed:
        pool.start("gateway", _serve_gateway, stub.port, str(data_dir), timeout_s=timeout_s)
    for library in ("httpx", "aiohttp"):
        if f"proxy-{library}" in needed:
            pool.start(f"proxy-{library}", _serve_proxy, stub.port, library, timeout_s=timeout_s)


async def _bench(args: argparse.Namespace, servers: dict[str, Server], started: float) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as probe:
        for server in servers.values():
            await _wait_healthy(probe, server, args.startup_timeout)
    global_deadline = started + args.time_limit
    for concurrency in args.concurrency_levels:
        runs: list[Run] = []
        for name in args.target_names:
            if time.monotonic() >= global_deadline:
                runs.append(Run(target=name, concurrency=concurrency, skipped=True))
                continue
            print(f"  running {name} at concurrency {concurrency} ...", file=sys.stderr)
            run = await _measure(
                TARGETS[name],
                servers,
                requests=args.requests,
                warmup=args.warmup,
                concurrency=concurrency,
                run_cap_s=args.max_run_seconds,
                global_deadline=global_deadline,
                request_timeout_s=args.request_timeout,
            )
            runs.append(run)
        print("\n" + _table(runs, concurrency), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.monotonic()
    print(_header(args), flush=True)
    pool = ServerPool()
    data_dir = Path(tempfile.mkdtemp(prefix="twinloop-bench-"))
    # SIGTERM stops the run like Ctrl-C does, so the `finally` below always stops the children.
    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _start_servers(pool, args.target_names, data_dir, args.startup_timeout)
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(_bench(args, pool.servers, started))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    except ServerStartError as e:
        print(f"\nserver failed to start: {e}", file=sys.stderr)
        return 1
    finally:
        pool.stop_all()
        shutil.rmtree(data_dir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous_term)
    print(f"\ntotal wall time {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
