"""A real S3-compatible server for tests and benchmarks: moto in server mode, as a subprocess.

The S3 backend speaks HTTP to it exactly as it would to MinIO or S3 (boto3, path-style
addressing), so what passes here is the wire protocol, not a mock of boto3.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from twinloop.settings import ArtifactSettings
from twinloop.testing.ports import free_port

# moto accepts any credentials; these keep boto3 from looking for real ones.
ACCESS_KEY_ID = "twinloop-test"
SECRET_ACCESS_KEY = "twinloop-test-secret"
REGION = "us-east-1"


@contextmanager
def moto_server(log_path: Path, *, start_timeout_s: float = 60.0) -> Iterator[str]:
    """Start `python -m moto.server` on a free loopback port; yields its endpoint URL."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_PORT": str(port)},
        )
        try:
            _wait_listening(process, port, start_timeout_s, log_path)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def artifact_settings(endpoint_url: str, store: str, **overrides: object) -> ArtifactSettings:
    """Settings for an S3 store at `store` (s3://bucket/prefix) on the server at `endpoint_url`."""
    return ArtifactSettings.model_validate(
        {
            "store": store,
            "s3_endpoint_url": endpoint_url,
            "s3_region": REGION,
            "s3_access_key_id": SecretStr(ACCESS_KEY_ID),
            "s3_secret_access_key": SecretStr(SECRET_ACCESS_KEY),
            "s3_timeout_s": 10.0,
            **overrides,
        }
    )


def _wait_listening(
    process: subprocess.Popen[bytes], port: int, timeout_s: float, log_path: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}: see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not listen on port {port} within {timeout_s} s")
