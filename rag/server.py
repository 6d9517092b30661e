"""Start, stop and watch the Chroma server this data directory owns.

Chroma's embedded `PersistentClient` is not safe across processes, and the
gateway and the trainer are separate processes, so `twinloop up` runs one real
Chroma server (the `chroma` console script that ships with chromadb) on
loopback with its data in `<data_dir>/chroma/`; every process talks to it over
HTTP. With `rag.external` set, the server at `rag.chroma_host:chroma_port` is
someone else's: it is never started or stopped, only watched.

The PID file and log live under `<data_dir>/rag/`; twinloop/processes.py owns
the process handling shared with the engines.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from rag.errors import ChromaServerError
from twinloop import processes
from twinloop.settings import Settings

HEARTBEAT_PATH = "/api/v2/heartbeat"


ChromaServerRecord = processes.ProcessRecord


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
        return processes.read_record(self.pid_path)

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
        if processes.port_taken(host, port):
            raise ChromaServerError(
                f"port {port} for Chroma is taken by a process this data directory did not "
                "start; stop it, set TWINLOOP_RAG__CHROMA_PORT, or set TWINLOOP_RAG__EXTERNAL=true "
                "to use that server"
            )
        self.data_path.mkdir(parents=True, exist_ok=True)
        self._child, record = processes.spawn(
            self.command(),
            env=self.environment(),
            log_path=self.log_path,
            pid_path=self.pid_path,
            port=port,
            label="Chroma",
        )
        return record

    def wait_healthy(self, timeout_s: float | None = None) -> float:
        """Block until the server answers its heartbeat; returns the seconds waited."""
        timeout_s = timeout_s if timeout_s is not None else self._rag.start_timeout_s
        try:
            return processes.wait_healthy(
                self.is_healthy,
                lambda: self._rag.external or self.record() is not None,
                timeout_s=timeout_s,
                interval_s=0.1,
            )
        except processes.NotHealthyError as e:
            what = (
                "the Chroma server is not running (exited during start-up, or never started)"
                if e.exited
                else f"Chroma at {self.base_url} was not healthy after {timeout_s:.0f} s"
            )
            raise ChromaServerError(f"{what}; last log lines:\n{self.log_tail()}") from e

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """End exactly the process group we started; False when none was running (or external)."""
        if self._rag.external:
            return False
        child, self._child = self._child, None
        return processes.stop(self.pid_path, child=child, timeout_s=timeout_s)

    def log_tail(self, lines: int = processes.LOG_TAIL_LINES) -> str:
        return processes.log_tail(self.log_path, lines)
