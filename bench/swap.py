"""Swap and rollback latency under load, and the requests that failed meanwhile.

Run against a running service (`make up`; admin token from TWINLOOP_ADMIN_TOKEN, else the
file `make up` wrote into the data directory):

    .venv/bin/python bench/swap.py --flips 40 --clients 4

It registers a random LoRA adapter for `law`, stages it to Shadow, then keeps
`--clients` threads sending `/answer` while it alternates swap and rollback.
Every rollback here is a pointer flip (the shadow slot still holds the target). Each
change names the generation it changes, the one the previous change answered with.
Latency is measured at the admin client, request to response, so it includes
HTTP, the database transaction and the engine check before the flip.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import statistics
import threading
import time

import httpx

from bench.results import add_json_option, latency_summary, write_results
from twinloop.settings import Settings
from twinloop.testing.admin import admin_headers
from twinloop.testing.staging import stage_random_lora
from twinloop.testing.stats import percentile


def main() -> None:
    parser = argparse.ArgumentParser(description="swap/rollback latency under load")
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--flips", type=int, default=40, help="swaps + rollbacks, alternating")
    parser.add_argument("--clients", type=int, default=4, help="threads sending /answer")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between flips")
    add_json_option(parser)
    args = parser.parse_args()
    admin = admin_headers()
    url = args.gateway

    before = httpx.get(f"{url}/status", headers=admin).raise_for_status().json()
    shadow_before = next(s["snapshot_id"] for s in before["slots"] if s["role"] == "shadow")
    with httpx.Client(base_url=url, headers=admin) as http:
        stage_random_lora(
            http, Settings().prepared_base_model_dir, domain="law", seed=int(time.time()),
            scaling=8, reason="bench",
        )  # fmt: skip

    outcomes: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                try:
                    status = http.post(
                        f"{url}/answer", json={"question": "Hi", "domain": "law", "max_tokens": 4}
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                outcomes.append(status)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    timings: dict[str, list[float]] = {"swap": [], "rollback": []}
    in_gateway: dict[str, list[float]] = {"swap": [], "rollback": []}
    began = time.monotonic()
    with httpx.Client(timeout=60, headers=admin) as http:
        generation = http.get(f"{url}/status").raise_for_status().json()["generation"]
        for i in range(args.flips):
            time.sleep(args.interval)
            kind = "swap" if i % 2 == 0 else "rollback"
            started = time.perf_counter()
            change = {"reason": "bench", "generation": generation}
            view = http.post(f"{url}/{kind}", json=change).raise_for_status().json()
            timings[kind].append((time.perf_counter() - started) * 1000)
            in_gateway[kind].append(view["took_ms"])
            generation = view["generation"]
        if args.flips % 2:
            leave = {"reason": "bench: leave as found", "generation": generation}
            http.post(f"{url}/rollback", json=leave).raise_for_status()
        # The random adapter must not stay in Shadow: stage what Shadow held before.
        http.post(
            f"{url}/snapshots/{shadow_before}/stage", json={"reason": "bench: leave as found"}
        ).raise_for_status()
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - began

    failed = sum(1 for status in outcomes if status != 200)
    print(f"{args.flips} flips in {elapsed:.1f} s, {args.clients} clients sending /answer")
    print("latency at the admin client (HTTP included) and inside the gateway (took_ms)")
    print(f"{'change':<20}{'n':>4}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for where, table in (("client", timings), ("gateway", in_gateway)):
        for kind, values in table.items():
            print(
                f"{kind + ' (' + where + ')':<20}{len(values):>4}{statistics.median(values):>9.1f}"
                f"{percentile(values, 0.99):>9.1f}{max(values):>9.1f}"
            )
    print(f"/answer requests: {len(outcomes)} served meanwhile, {failed} failed")
    figures = {
        "flips": args.flips,
        "clients": args.clients,
        "seconds": elapsed,
        "client": {kind: latency_summary(values) for kind, values in timings.items()},
        "gateway": {kind: latency_summary(values) for kind, values in in_gateway.items()},
        "requests": len(outcomes),
        "failed_requests": failed,
    }
    write_results(args.json, "swap", figures)


if __name__ == "__main__":
    main()
