"""Several gateways on one PostgreSQL running one canary: how long each takes to follow.

In-process gateways (each with its own pool, release watcher and canary loop, at the
settings' refresh and split delay) over fake engines, on a throwaway database. Each round
starts a canary through one gateway, asks a set of users through every gateway in turn
until the split has begun everywhere, then aborts through another gateway. It reports

* read: from the start's response until each other gateway holds the canary in memory
  (bounded by `canary.refresh_s` plus a query);
* split: from the start's response until the first canary answer on each gateway (the
  split begins at `percent_from`, `canary.split_delay_s` after the start, on all at once);
* flips: users answered on the canary through one gateway and then on Active through
  another while the canary ran (the design says 0);
* abort: from the abort's response until each other gateway stops splitting.

    python bench/canary_gateways.py --database-url postgresql+asyncpg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's twinloop

import argparse
import asyncio
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx

from twinloop.db import migrate
from twinloop.runtime import Runtime
from twinloop.settings import CanarySettings, EngineSettings, Settings
from twinloop.testing.adapters import write_fake_adapter
from twinloop.testing.engine import FakeEngine
from twinloop.testing.gateway import in_process_gateway_runtime

TOKEN = "bench-canary-gateways-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
Gateway = tuple[httpx.AsyncClient, Runtime]


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=ADMIN)
    response.raise_for_status()
    reply: dict[str, Any] = response.json()
    return reply


async def _stage(client: httpx.AsyncClient, folder: Path) -> None:
    adapter = await _post(client, "/adapters", {"path": str(write_fake_adapter(folder)),
                                                 "domain": "law"})  # fmt: skip
    await _post(client, "/snapshots", {"adapters": {"law": adapter["id"]}})


async def _role(client: httpx.AsyncClient, user: str) -> str:
    response = await client.post("/answer", json={"question": "Q?", "domain": "law",
                                                  "user_id": user})  # fmt: skip
    response.raise_for_status()
    return str(response.json()["role"])


async def _round(gateways: list[Gateway], n: int, users: list[str]) -> dict[str, Any]:
    starter, aborter = n % len(gateways), (n + 1) % len(gateways)
    await _post(gateways[starter][0], "/canary", {"percent": 50, "reason": f"bench round {n}"})
    started = time.monotonic()
    others = [i for i in range(len(gateways)) if i != starter]
    read = asyncio.create_task(_until(gateways, others, started, running=True))
    split: dict[int, float] = {}
    last: dict[str, str] = {}
    flips = 0
    while len(split) < len(gateways):
        for i, (client, _) in enumerate(gateways):
            for user in users:
                role = await _role(client, user)
                flips += last.get(user) == "canary" and role == "active"
                last[user] = role
                if role == "canary" and i not in split:
                    split[i] = time.monotonic() - started
        if time.monotonic() - started > 30:
            raise RuntimeError(f"round {n}: the split did not reach every gateway in 30 s")
    await _post(gateways[aborter][0], "/canary/abort", {"reason": f"bench round {n}"})
    aborted = time.monotonic()
    others = [i for i in range(len(gateways)) if i != aborter]
    stopped = await _until(gateways, others, aborted, running=False)
    return {"read": await read, "split": list(split.values()), "flips": flips,
            "abort": stopped}  # fmt: skip


async def _until(
    gateways: list[Gateway], which: list[int], since: float, *, running: bool
) -> list[float]:
    """Seconds from `since` until each gateway in `which` holds a canary in memory
    (`running`), or none; polled every 5 ms."""
    seen: dict[int, float] = {}
    while len(seen) < len(which):
        for i in which:
            if i not in seen and (gateways[i][1].canary.state is not None) is running:
                seen[i] = time.monotonic() - since
        await asyncio.sleep(0.005)
    return list(seen.values())


def _summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return (
        f"{name:>6}: median {statistics.median(ms):7.0f} ms, max {ms[-1]:7.0f} ms "
        f"({len(ms)} samples)"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url=args.database_url,
            admin_token=TOKEN,
            engines=EngineSettings(blue_port=18101, green_port=18102, retries=1),
            canary=CanarySettings(evaluate_s=3600),  # the loops only read; rounds decide
            log_level="WARNING",
        )
        engines = FakeEngine(ports={18101: "blue", 18102: "green"})
        async with AsyncExitStack() as stack:
            gateways = [
                await stack.enter_async_context(
                    in_process_gateway_runtime(settings, engines.transport(), f"http://gw-{n}")
                )
                for n in range(args.gateways)
            ]
            await _stage(gateways[0][0], Path(tmp) / "law")
            await asyncio.sleep(2 * settings.gateway.release_poll_s)  # every gateway has it
            users = [f"user-{i}" for i in range(args.users)]
            rounds = [await _round(gateways, n, users) for n in range(args.rounds)]
    cfg = settings.canary
    print(
        f"{args.gateways} gateways, {args.rounds} rounds, {args.users} users; "
        f"refresh_s {cfg.refresh_s}, split_delay_s {cfg.split_delay_s}"
    )
    for name in ("read", "split", "abort"):
        print(_summary(name, [v for r in rounds for v in r[name]]))
    print(f" flips: {sum(r['flips'] for r in rounds)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="an empty PostgreSQL database")
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--users", type=int, default=8)
    arguments = parser.parse_args()
    migrate.upgrade(arguments.database_url)  # Alembic runs its own event loop
    asyncio.run(main(arguments))
