"""A real Prometheus (Debian's `prometheus`, which `make deploy-tools` installs) run on
`deploy/prometheus.yml` with its targets moved to where a test's services listen.

The config is deploy/'s own: only each target's address and the scrape interval change, so
its jobs, paths and labels are what the test checks. Every target in the file must be given
an address, so a target added to deploy/ without a test fails here rather than going
unscraped.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.unit.deploy.support import DEPLOY
from twinloop.testing.ports import free_port
from twinloop.testing.processes import terminate


def rewritten_config(addresses: Mapping[str, str], *, interval_s: int) -> dict[str, Any]:
    """deploy/prometheus.yml with each `service:port` target replaced by `addresses[target]`."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    # Prometheus refuses a timeout longer than the interval (its default is 10 s).
    config["global"] |= {"scrape_interval": f"{interval_s}s", "scrape_timeout": f"{interval_s}s"}
    unmapped = set()
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            unmapped |= {target for target in group["targets"] if target not in addresses}
            group["targets"] = [addresses.get(target, target) for target in group["targets"]]
    assert not unmapped, f"deploy/prometheus.yml targets the test gives no address: {unmapped}"
    return config


@contextmanager
def running_prometheus(binary: str, config: dict[str, Any], workdir: Path) -> Iterator[str]:
    """Prometheus on a loopback port with `config`, its data under `workdir`; its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _ready(url):
            exited = process.poll()
            assert exited is None, f"prometheus exited {exited}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"prometheus not ready: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        yield url
    finally:
        terminate(process, timeout_s=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector `promql` evaluates to: each series' labels under `metric`."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(url: str, promql: str, *, timeout_s: float) -> list[dict[str, Any]]:
    """Poll `promql` until it returns a series (a scrape has landed); what it returned."""
    deadline = time.monotonic() + timeout_s
    while not (result := query(url, promql)):
        targets = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {t["scrapeUrl"]: (t["health"], t["lastError"]) for t in targets}
        assert time.monotonic() < deadline, f"no series for {promql!r}; targets: {health}"
        time.sleep(0.5)
    return result
