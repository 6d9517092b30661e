"""Background processes a data directory owns: the engines and the Chroma server.

Each runs in a session of its own, so stopping signals its whole process group
(vLLM forks an engine-core worker) and nothing else. A PID file records the
process's start time too, so a stale file never makes us signal a process that
merely reuses the PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class ProcessRecord:
    """What a PID file holds."""

    pid: int
    create_time: float
    port: int
    started_at: float


def spawn(
    command: Sequence[str],
    *,
    env: dict[str, str],
    log_path: Path,
    pid_path: Path,
    port: int,
    label: str,
    niceness: int = 0,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start `command` in its own session, output appended to `log_path`, PID file written."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n--- starting {label} at {time.ctime()} ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(command),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    child = psutil.Process(process.pid)
    if niceness:
        lower_priority(child, niceness)
    record = ProcessRecord(
        pid=process.pid, create_time=child.create_time(), port=port, started_at=time.time()
    )
    pid_path.write_text(json.dumps(asdict(record)))
    return process, record


class NotHealthyError(Exception):
    """`wait_healthy` gave up: the process exited, or it stayed unhealthy too long."""

    def __init__(self, *, exited: bool) -> None:
        super().__init__("exited" if exited else "timed out")
        self.exited = exited


def wait_healthy(
    is_healthy: Callable[[], bool],
    is_running: Callable[[], bool],
    *,
    timeout_s: float,
    interval_s: float,
) -> float:
    """Poll until `is_healthy()`; returns the seconds waited. Gives up early if it exits."""
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        if is_healthy():
            return waited
        if not is_running():
            raise NotHealthyError(exited=True)
        if waited > timeout_s:
            raise NotHealthyError(exited=False)
        time.sleep(interval_s)


def read_record(pid_path: Path) -> ProcessRecord | None:
    """The PID file's record if that process is still the one that was started."""
    try:
        record = ProcessRecord(**json.loads(pid_path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    try:
        process = psutil.Process(record.pid)
        alive = process.status() != psutil.STATUS_ZOMBIE
        same = abs(process.create_time() - record.create_time) < 1.0
    except psutil.Error:
        return None
    return record if alive and same else None


def stop(pid_path: Path, *, child: subprocess.Popen[bytes] | None, timeout_s: float) -> bool:
    """End exactly the recorded process group; False when none was running."""
    record = read_record(pid_path)
    if record is None:
        pid_path.unlink(missing_ok=True)
        return False
    _signal_group(record.pid, signal.SIGTERM)
    try:
        psutil.Process(record.pid).wait(timeout=timeout_s)
    except psutil.TimeoutExpired:
        _signal_group(record.pid, signal.SIGKILL)
    except psutil.NoSuchProcess:
        pass
    # A forked child (vLLM's engine core) can outlive its parent for a moment.
    _wait_group_gone(record.pid, timeout_s)
    if child is not None:
        # Reaping it avoids zombies and "still running" warnings from Popen.
        child.wait(timeout=timeout_s)
    pid_path.unlink(missing_ok=True)
    return True


def lower_priority(process: psutil.Process, niceness: int) -> None:
    """Let the gateway win the CPU over this process and what it forks later.

    With the kernel's autogroup scheduling on, a nice value only counts inside its own
    session, and these processes have sessions of their own, so the session's autogroup
    gets the same niceness (best effort: kernels without autogroup have no such file).
    """
    process.nice(niceness)
    with contextlib.suppress(OSError):
        Path(f"/proc/{process.pid}/autogroup").write_text(str(niceness))


def port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_pgid(p.pid) == pgid for p in psutil.process_iter(["pid"])):
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
