"""The harness of bench/gateway_overhead.py: server processes, a load generator, CPU
accounting. What is measured (the targets and their servers) is the
benchmark's; nothing here knows about the gateway (percentiles are the shared
`twinloop.testing.stats.percentile`).

Each server runs in a spawned child process that binds a free loopback port and reports it
through a pipe; the load generator (aiohttp, keep-alive, fixed concurrency) runs in the
parent, on the same event loop flavour as the servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import importlib.util
import itertools
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import aiohttp
import psutil

from twinloop.testing.stats import percentile

HOST = "127.0.0.1"
LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
HTTP = "httptools" if importlib.util.find_spec("httptools") else "h11"


@dataclass(frozen=True)
class Target:
    """One row of the table: requests to `path` on the server named `server`.

    `body` is sent with the text `{n}` in it replaced by the request's number, so that every
    request can ask a question of its own (no cache can answer it). A `stream` target asks
    for server-sent events and counts the events it reads."""

    name: str
    server: str  # which server process answers it
    path: str
    body: dict[str, Any]
    stream: bool = False

    def body_for(self, n: int) -> bytes:
        return self._template.replace(b"{n}", str(n).encode())

    @functools.cached_property
    def _template(self) -> bytes:
        return json.dumps(self.body).encode()


# The number in each request's question: never the same twice in one bench process, so no
# run (another concurrency, the warm-up) asks a question an earlier one left in a cache.
_QUESTION_NUMBERS = itertools.count()


# -- child processes ------------------------------------------------------------------


def child_prologue(parent_pid: int) -> None:
    """Exit when the parent is gone, even if it was killed too hard to clean up."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def listen_and_report(conn: Connection) -> socket.socket:
    """Bind a free loopback port here (no race with other programs) and tell the parent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(2048)
    conn.send(sock.getsockname()[1])
    conn.close()
    return sock


def new_loop() -> asyncio.AbstractEventLoop:
    if LOOP == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve_asgi(app: Any, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        app, loop=LOOP, http=HTTP, access_log=False, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)  # uvicorn has logged why (lifespan startup failed, most likely)


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

    def start(
        self, name: str, fn: Callable[..., None], *args: Any, timeout_s: float, daemon: bool = True
    ) -> Server:
        """Start `fn` in a child; `daemon=False` for one that starts processes of its own
        (gateway workers), which a daemonic process may not."""
        receive, send = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=fn, args=(send, os.getpid(), *args), name=f"bench-{name}", daemon=daemon
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


async def wait_healthy(
    session: aiohttp.ClientSession, server: Server, path: str, timeout_s: float
) -> None:
    """Wait until `path` on `server` answers 200; raise if it exits or times out first."""
    url = f"http://{HOST}:{server.port}{path}"
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
        except (aiohttp.ClientError, TimeoutError) as e:  # a busy server: ask again
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
    events: int = 0  # streams: server-sent events read (`data: [DONE]` not counted)
    ttft_ms: list[float] = field(default_factory=list)  # streams: until the first event

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def ttft(self, q: int) -> float | None:
        return percentile(self.ttft_ms, q / 100) if self.ttft_ms else None

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def pct(self, q: int) -> float | None:
        return percentile(self.latencies_ms, q / 100) if self.latencies_ms else None


_DONE = b"data: [DONE]"


async def _read_stream(
    response: aiohttp.ClientResponse, started: float, run: Run
) -> tuple[bytes, int]:
    """The whole event stream; the time to its first event goes to `run.ttft_ms`."""
    parts: list[bytes] = []
    first = True
    async for data in response.content.iter_any():
        if first and b"data:" in data:
            run.ttft_ms.append((time.perf_counter() - started) * 1000)
            first = False
        parts.append(data)
    payload = b"".join(parts)
    return payload, payload.count(b"data: ") - payload.count(_DONE)


async def _load(
    session: aiohttp.ClientSession,
    url: str,
    target: Target,
    *,
    expected: bytes,
    requests: int,
    concurrency: int,
    deadline: float,
    run: Run,
) -> None:
    """`requests` POSTs, `concurrency` at a time, each worker on its own kept-alive connection.
    A stream counts when it ends with `data: [DONE]` and carries `expected`."""
    issued = 0
    headers = {"Content-Type": "application/json"}

    async def worker() -> None:
        nonlocal issued
        while issued < requests:
            if time.monotonic() > deadline:
                run.capped = True
                return
            issued += 1
            body = target.body_for(next(_QUESTION_NUMBERS))
            started = time.perf_counter()
            events = 0
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    status = response.status
                    if target.stream and status == 200:
                        payload, events = await _read_stream(response, started, run)
                        if not payload.rstrip().endswith(_DONE):
                            status = -1  # a stream that broke off
                    else:
                        payload = await response.read()
            except (aiohttp.ClientError, TimeoutError) as e:
                status, payload = 0, repr(e).encode()
            if status == 200 and expected in payload:
                run.events += events
                run.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                run.failed += 1
                problem = f"HTTP {status}: {payload[-300:]!r}" if status else payload.decode()
                run.first_failure = run.first_failure or problem

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _cpu_s(pid: int) -> float:
    """CPU time of a process and its children (a gateway's workers), dead threads included."""
    total = _own_cpu_s(pid)
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return total
    for child in children:
        with contextlib.suppress(psutil.Error, OSError):  # gone meanwhile
            total += _own_cpu_s(child.pid)
    return total


def _own_cpu_s(pid: int) -> float:
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


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _find_clock_getcpuclockid() -> Any:
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    return getattr(libc, "clock_getcpuclockid", None)


_clock_getcpuclockid = _find_clock_getcpuclockid()


async def measure(
    target: Target,
    servers: dict[str, Server],
    *,
    upstream: str,
    expected: bytes,
    requests: int,
    warmup: int,
    concurrency: int,
    run_cap_s: float,
    global_deadline: float,
    request_timeout_s: float,
) -> Run:
    """`warmup` then `requests` requests to `target`, `concurrency` at a time; a reply
    counts when it is a 200 carrying `expected`. CPU per request is the target's server's,
    the `upstream` server's (the engine it forwards to) and this process's."""
    run = Run(target=target.name, concurrency=concurrency)
    server = servers[target.server]
    url = f"http://{HOST}:{server.port}{target.path}"
    deadline = min(time.monotonic() + run_cap_s, global_deadline)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = Run(target=target.name, concurrency=concurrency)
        load = functools.partial(
            _load, session, url, target, expected=expected, concurrency=concurrency
        )
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
    run.other_cpu_pct = 100 * max(0.0, used["machine"] - ours) / (run.elapsed_s * usable_cores())
    if run.ok:
        per_request = {
            "server": used[target.server],
            "upstream": used[upstream],
            "loadgen": used["loadgen"],
        }
        run.cpu_us = {k: v * 1e6 / run.ok for k, v in per_request.items()}
    return run
