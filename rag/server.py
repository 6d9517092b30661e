"""Start, stop and watch the Chroma server this data directory owns.

Chroma's embedded `PersistentClient` is not safe across processes, and the
gateway and the trainer are separate processes, so `twinloop up` runs one real
Chroma server (the `chroma` console script that ships with chromadb) on
loopback with its data in `<data_dir>/chroma/`; every process talks to it over
HTTP. With `rag.external` set, the server at `rag.chroma_host:chroma_port` is
someone else's: it is never started or stopped, only watched.

The PID file and log live under `<data_dir>/rag/`. Like the engines' PID
files, it records the process's start time too, so `stop` never signals a
process that merely reuses an old PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from rag.errors import ChromaServerError
from twinloop.settings import Settings

HEARTBEAT_PATH = "/api/v2/heartbeat"
LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class ChromaServerRecord:
    """What the PID file holds."""

    pid: int
    create_time: float
    port: int
    started_at: float


@dataclass(frozen=True)
class ChromaServerStatus:
    host: str
    port: int
    external: bool
    pid: int | None
    running: bool
    healthy: bool
    data_path: Path
    log_path: Path


class ChromaServer:
    """The Chroma server process of one data directory."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._rag = settings.rag
        self.data_path = settings.data_dir / "chroma"
        self.run_dir = settings.data_dir / "rag"
        self.log_path = self.run_dir / "chroma.log"
        self.pid_path = self.run_dir / "chroma.pid"
        # The process this object spawned, kept so stop() can reap it (no zombie, no
        # "still running" warning); a server started by another process is found by PID file.
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return self._rag.base_url

    def command(self) -> list[str]:
        # The console script next to this interpreter: the venv's, whatever PATH says.
        return [
            str(Path(sys.executable).parent / "chroma"), "run",
            "--path", str(self.data_path.resolve()),
            "--host", self._rag.chroma_host,
            "--port", str(self._rag.chroma_port),
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1", "DO_NOT_TRACK": "1"})
        return env

    # -- queries ------------------------------------------------------------------

    def record(self) -> ChromaServerRecord | None:
        """The PID file's record if that process is still the one we started."""
        try:
            record = ChromaServerRecord(**json.loads(self.pid_path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None
        try:
            process = psutil.Process(record.pid)
            alive = process.status() != psutil.STATUS_ZOMBIE
            same = abs(process.create_time() - record.create_time) < 1.0
        except psutil.Error:
            return None
        return record if alive and same else None

    def is_healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.base_url}{HEARTBEAT_PATH}", timeout=2.0)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        try:
            return "nanosecond heartbeat" in response.json()
        except ValueError:
            return False

    def status(self) -> ChromaServerStatus:
        record = None if self._rag.external else self.record()
        return ChromaServerStatus(
            host=self._rag.chroma_host,
            port=self._rag.chroma_port,
            external=self._rag.external,
            pid=record.pid if record else None,
            running=record is not None,
            healthy=self.is_healthy(),
            data_path=self.data_path,
            log_path=self.log_path,
        )

    # -- actions --------------------------------------------------------------------

    def start(self) -> ChromaServerRecord | None:
        """Spawn the server unless ours already runs; does not wait for health.

        Returns None, starting nothing, when the server is external.
        """
        if self._rag.external:
            return None
        existing = self.record()
        if existing is not None:
            return existing
        host, port = self._rag.chroma_host, self._rag.chroma_port
        if _port_taken(host, port):
            raise ChromaServerError(
                f"port {port} for Chroma is taken by a process this data directory did not "
                "start; stop it, set TWINLOOP_RAG__CHROMA_PORT, or set TWINLOOP_RAG__EXTERNAL=true "
                "to use that server"
            )
        self.data_path.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- starting Chroma at {time.ctime()} ---\n".encode())
            log.flush()
            # Own session: stop() signals the whole group and nothing else.
            process = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._child = process
        record = ChromaServerRecord(
            pid=process.pid,
            create_time=psutil.Process(process.pid).create_time(),
            port=port,
            started_at=time.time(),
        )
        self.pid_path.write_text(json.dumps(asdict(record)))
        return record

    def wait_healthy(self, timeout_s: float | None = None) -> float:
        """Block until the server answers its heartbeat; returns the seconds waited."""
        timeout_s = timeout_s if timeout_s is not None else self._rag.start_timeout_s
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            if self.is_healthy():
                return waited
            if not self._rag.external and self.record() is None:
                raise ChromaServerError(
                    "the Chroma server is not running (exited during start-up, or never "
                    f"started); last log lines:\n{self.log_tail()}"
                )
            if waited > timeout_s:
                raise ChromaServerError(
                    f"Chroma at {self.base_url} was not healthy after {timeout_s:.0f} s; "
                    f"last log lines:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """End exactly the process group we started; False when none was running (or external)."""
        if self._rag.external:
            return False
        record = self.record()
        if record is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        _signal_group(record.pid, signal.SIGTERM)
        try:
            psutil.Process(record.pid).wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            _signal_group(record.pid, signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
        _wait_group_gone(record.pid, timeout_s)
        child, self._child = self._child, None
        if child is not None:
            child.wait(timeout=timeout_s)
        self.pid_path.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
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


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
