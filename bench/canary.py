"""Canary against a running `make up`: how long a good and a bad Shadow take to be decided.

Through the public API only. For each scenario it stages a Shadow, starts a canary, and
runs simulated users (stable ids, so assignment is sticky) who ask general questions whose
right answers are known (twinloop/testing/data/general_holdout.jsonl) and send a thumbs
up or down by whether the answer is right, until the canary decides:

* `good` — a copy of Active's snapshot (no worse by construction): should be promoted, or
  end inconclusive if the deadline passes before the sample shows non-inferiority;
* `bad` — the `general` domain on a random LoRA at scaling 8 (garbled answers): should be
  aborted, and users on the canary arm see its answers only until then.

Each scenario runs twice, side by side in one run: split only (`mirror_percent` 0), then
split + mirror (`--mirror-percent` of Active's requests also asked of Shadow in the
background and paired). It prints per run: time to decision, user requests per arm (the
canary arm's are users who met the Shadow), user-visible errors, the thumbs-up rate per
arm, the mirrored pairs, the decision, its reason and its statistics; and at the end a
table of both modes, with how many fewer user requests the paired comparison needed.

The users are one client app: a `client` API key made for the run (and revoked after it)
asks and rates, so their feedback is on answers served to that key, as /ingest requires.

    .venv/bin/python bench/canary.py --scenario both

(admin token from `--token`, else TWINLOOP_ADMIN_TOKEN, else the file `make up` wrote into the
data directory.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import random
import threading
import time
from collections import Counter
from typing import Any

import httpx

from bench.results import add_json_option, write_results
from twinloop.settings import Settings
from twinloop.testing.admin import admin_headers
from twinloop.testing.learning_eval import is_right, load_holdout
from twinloop.testing.staging import stage_random_lora

ENDED = {"promoted", "aborted", "inconclusive"}


def _stage_shadow(http: httpx.Client, scenario: str) -> str:
    reason = f"bench/canary.py: {scenario}"
    if scenario == "bad":
        staged = stage_random_lora(
            http, Settings().prepared_base_model_dir, domain="general", seed=7, scaling=8,
            reason=reason, timeout_s=300,
        )  # fmt: skip
        return staged.snapshot_id
    # A copy of Active's snapshot: no domain changes its adapter.
    created = http.post("/snapshots", json={"adapters": {}, "reason": reason}).raise_for_status()
    snapshot_id: str = created.json()["id"]
    return snapshot_id


def _users(
    url: str, args: argparse.Namespace, stop: threading.Event, tally: Counter[str],
    lock: threading.Lock, app_key: dict[str, str],
) -> list[threading.Thread]:  # fmt: skip
    questions = load_holdout()

    def user(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=url, timeout=120, headers=app_key) as http:
            while not stop.is_set():
                # A population larger than the threads: the arms' shares follow `percent`.
                user_id = f"bench-canary-user-{rng.randrange(args.population)}"
                item = rng.choice(questions)
                body = {"question": item.question, "domain": "general", "max_tokens": 24,
                        "user_id": user_id}  # fmt: skip
                try:
                    response = http.post("/answer", json=body)
                except httpx.HTTPError:
                    with lock:
                        tally["error.unknown"] += 1
                    continue
                if response.status_code != 200:
                    with lock:
                        tally["error.unknown"] += 1
                    continue
                answer = response.json()
                role = answer.get("role", "active")
                rating = "up" if is_right(answer["answer"], item.accept) else "down"
                http.post("/ingest", json={"items": [{
                    "type": "feedback", "id": f"fb-{answer['answer_id']}",
                    "answer_id": answer["answer_id"], "rating": rating,
                }]})  # fmt: skip
                with lock:
                    tally[f"requests.{role}"] += 1
                    tally[f"{rating}.{role}"] += 1

    return [threading.Thread(target=user, args=(n,), daemon=True) for n in range(args.users)]


def run(args: argparse.Namespace, scenario: str, mirror_percent: float) -> dict[str, Any]:
    admin = admin_headers(args.token)
    mode = f"split + mirror {mirror_percent:g}%" if mirror_percent else "split only"
    print(f"\n== {scenario} Shadow, {mode} ==")
    with httpx.Client(base_url=args.gateway, headers=admin, timeout=300) as http:
        shadow = _stage_shadow(http, scenario)
        started = time.monotonic()
        http.post("/canary", json={
            "percent": args.percent, "min_requests": args.min_requests,
            "max_duration_s": args.max_duration_s, "mirror_percent": mirror_percent,
            "reason": f"bench {scenario}, {mode}",
        }).raise_for_status()  # fmt: skip
        stop, lock, tally = threading.Event(), threading.Lock(), Counter[str]()
        key = http.post("/keys", json={
            "name": f"bench/canary.py users ({scenario}, {mode})", "role": "client",
            "rate_limit_per_minute": 1_000_000,
        }).raise_for_status().json()  # fmt: skip
        app_key = {"Authorization": f"Bearer {key['key']}"}
        threads = _users(args.gateway, args, stop, tally, lock, app_key)
        for thread in threads:
            thread.start()
        canary: dict[str, Any] = {}
        try:
            while time.monotonic() - started < args.max_duration_s + 120:
                time.sleep(5)
                canary = http.get("/canary").raise_for_status().json()["canary"] or {}
                with lock:
                    seen = dict(tally)
                print(f"  {time.monotonic() - started:6.0f} s {canary.get('status')}: {seen}")
                if canary.get("status") in ENDED:
                    break
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=150)
            http.delete(f"/keys/{key['id']}")
    took = time.monotonic() - started
    print(
        f"{scenario} Shadow (snapshot {shadow}), {mode}: {canary.get('status')} after {took:.0f} s"
    )
    for role in ("active", "canary"):
        n = tally[f"requests.{role}"]
        up = tally[f"up.{role}"]
        print(f"  {role:7} requests {n:5}  thumbs up {up}/{n} = {up / n if n else 0:.3f}")
    print(f"  user-visible errors: {tally['error.unknown']}")
    print(f"  reason: {canary.get('reason')}")
    decisions = canary.get("decisions") or []
    stats = decisions[0]["stats"] if decisions else {}
    pairs = stats.get("pairs", {})
    if decisions:
        print(f"  decision: {decisions[0]['decision']}: {decisions[0]['reason']}")
        print(f"  pairs: {pairs.get('tally')}, drift test {pairs.get('drift')}")
        print(f"  pair score bound: {pairs.get('promote_bound')}")
        print(f"  statistics: {stats}")
    return {
        "scenario": scenario,
        "mode": mode,
        "status": canary.get("status"),
        "seconds": took,
        "active": tally["requests.active"],
        "canary": tally["requests.canary"],
        "errors": tally["error.unknown"],
        "pairs": (pairs.get("tally") or {}),
    }


def _table(results: list[dict[str, Any]]) -> None:
    header = "scenario  mode                  decision      time s  user requests (canary)"
    print(f"\n{header}  pairs w/t/l/u")
    for r in results:
        p = r["pairs"]
        wtl = "/".join(str(p.get(k, 0)) for k in ("wins", "ties", "losses", "undecided"))
        users = f"{r['active'] + r['canary']} ({r['canary']})"
        print(f"{r['scenario']:9} {r['mode']:21} {r['status'] or '-':13} {r['seconds']:6.0f}  "
              f"{users:22}  {wtl}")  # fmt: skip
    for scenario in ("bad", "good"):
        split, mirror = (next((r for r in results if r["scenario"] == scenario and
                               (r["mode"] == "split only") is only), None)
                         for only in (True, False))  # fmt: skip
        if split and mirror:
            before, after = split["active"] + split["canary"], mirror["active"] + mirror["canary"]
            print(
                f"{scenario}: split + mirror decided with {after} user requests against "
                f"{before} split only ({after / before:.2f}x), {mirror['canary']} against "
                f"{split['canary']} on the canary arm"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=None, help="default: the admin token in force")
    parser.add_argument("--scenario", choices=("good", "bad", "both"), default="both")
    parser.add_argument("--percent", type=float, default=50.0)
    parser.add_argument("--min-requests", type=int, default=100)
    parser.add_argument("--max-duration-s", type=float, default=600.0)
    parser.add_argument("--users", type=int, default=8, help="concurrent request threads")
    parser.add_argument("--population", type=int, default=400, help="distinct user ids")
    parser.add_argument("--mirror-percent", type=float, default=100.0,
                        help="Active's requests mirrored in the split + mirror runs")  # fmt: skip
    parser.add_argument("--modes", choices=("split", "mirror", "both"), default="both")
    add_json_option(parser)
    args = parser.parse_args()
    mirrors = {"split": [0.0], "mirror": [args.mirror_percent]}.get(
        args.modes, [0.0, args.mirror_percent]
    )
    results = [
        run(args, scenario, mirror)
        for scenario in (("bad", "good") if args.scenario == "both" else (args.scenario,))
        for mirror in mirrors
    ]
    _table(results)
    write_results(args.json, "canary", {"percent": args.percent, "runs": results})


if __name__ == "__main__":
    main()
