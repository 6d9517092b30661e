"""Servers that tests start as child processes (moto, Prometheus)."""

from __future__ import annotations

import subprocess


def terminate(process: subprocess.Popen[bytes], *, timeout_s: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout_s`; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
