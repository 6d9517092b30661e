"""Start and stop the trainer process (`twinloop trainer`) that `twinloop up` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from twinloop import processes
from twinloop.settings import Settings

HOST = "127.0.0.1"


class TrainerProcess:
    """The trainer of one data directory: its PID file, log and metrics port."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        run_dir = settings.training_dir
        self.log_path = run_dir / "trainer.log"
        self.pid_path = run_dir / "trainer.pid"
        self.port = settings.trainer.metrics_port
        self._child: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "twinloop"), "trainer"]

    def record(self) -> processes.ProcessRecord | None:
        return processes.read_record(self.pid_path)

    def is_healthy(self) -> bool:
        try:
            response = httpx.get(f"http://{HOST}:{self.port}/metrics", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def start(self) -> processes.ProcessRecord:
        """Spawn the trainer unless ours already runs; at a lower priority than serving."""
        existing = self.record()
        if existing is not None:
            return existing
        self._child, record = processes.spawn(
            self.command(),
            env=dict(os.environ),
            log_path=self.log_path,
            pid_path=self.pid_path,
            port=self.port,
            label="trainer",
            niceness=self._settings.trainer.niceness,
        )
        return record

    def wait_healthy(self, timeout_s: float | None = None) -> float:
        return processes.wait_healthy(
            self.is_healthy,
            lambda: self.record() is not None,
            timeout_s=timeout_s or self._settings.trainer.start_timeout_s,
            interval_s=0.2,
        )

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        child, self._child = self._child, None
        return processes.stop(self.pid_path, child=child, timeout_s=timeout_s)

    def log_tail(self, lines: int = processes.LOG_TAIL_LINES) -> str:
        return processes.log_tail(self.log_path, lines)
