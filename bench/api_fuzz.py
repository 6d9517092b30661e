"""Schemathesis against the gateway's OpenAPI document, with a longer budget than `make test`.

The gateway runs in-process as the unit tests build it (fake engines, router and index,
SQLite in a temporary folder); every operation gets `--examples` valid and as many invalid
generated requests per seed, the admin routes with the admin token. Each response is
checked: no 5xx, status code and content type documented, body as documented. Prints the
operations, cases and status codes, then each distinct failure (operation and check) with
the request that found it; exits 1 if there was any.

    .venv/bin/python bench/api_fuzz.py --examples 100 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from twinloop.logging import configure_logging
from twinloop.testing.api_fuzz import FuzzReport, fake_gateway, fuzz_client

ADMIN_TOKEN = "bench-admin-token"


async def run(examples: int, seed: int) -> FuzzReport:
    with tempfile.TemporaryDirectory(prefix="twinloop-fuzz-") as tmp:
        async with fake_gateway(Path(tmp), admin_token=ADMIN_TOKEN) as client:
            openapi = (await client.get("/openapi.json")).json()
            return await fuzz_client(
                client,
                openapi,
                examples=examples,
                seed_value=seed,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="cases per operation and mode")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    args = parser.parse_args()
    configure_logging("WARNING")  # the gateway's info lines would drown the report
    failed = False
    for seed in args.seeds:
        started = time.perf_counter()
        report = asyncio.run(run(args.examples, seed))
        print(f"seed {seed}, {time.perf_counter() - started:.0f} s: {report.summary()}\n")
        failed = failed or bool(report.failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
