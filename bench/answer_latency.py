"""Single-request latency of a real answer: straight to vLLM versus through the gateway.

Run against a running service (`make up`). Requests are interleaved, one at a
time, with greedy decoding and the same question up to a request number (so
the paths generate alike, and the gateway's answer cache, which would answer a
repeated question at temperature 0 without the engine, never hits); the
difference is what the gateway adds (routing, persistence, metrics, one more
HTTP hop).

    .venv/bin/python bench/answer_latency.py --requests 30
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import statistics
import time

import httpx

from bench.results import add_json_option, latency_summary, write_results
from twinloop.testing.stats import percentile

QUESTIONS = [
    "What is the capital of France?",
    "What is the largest planet in the solar system?",
    "Who wrote Romeo and Juliet?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--engine", default="http://127.0.0.1:8101", help="the active engine")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=16)
    add_json_option(parser)
    args = parser.parse_args()

    timings: dict[str, list[float]] = {"vllm direct": [], "gateway /v1": [], "gateway /answer": []}
    with httpx.Client(timeout=120) as client:
        for i in range(args.requests + 3):
            asked = [f"{QUESTIONS[i % len(QUESTIONS)]} (question {3 * i + k})" for k in range(3)]
            calls = {
                "vllm direct": (f"{args.engine}/v1/chat/completions", _chat(args, asked[0])),
                "gateway /v1": (f"{args.gateway}/v1/chat/completions", _chat(args, asked[1])),
                "gateway /answer": (
                    f"{args.gateway}/answer",
                    {"question": asked[2], "max_tokens": args.max_tokens},
                ),
            }
            for name, (url, body) in calls.items():
                started = time.perf_counter()
                response = client.post(url, json=body)
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                if i >= 3:  # the first rounds warm caches and connections
                    timings[name].append(elapsed)

    base = statistics.median(timings["vllm direct"])
    print(
        f"single-request latency, {args.requests} interleaved requests each, greedy, "
        f"max_tokens={args.max_tokens}"
    )
    print(f"{'path':<18}{'p50 ms':>9}{'p90 ms':>9}{'min ms':>9}{'+p50 ms':>9}")
    for name, values in timings.items():
        p50 = statistics.median(values)
        extra = "-" if name == "vllm direct" else f"{p50 - base:+.1f}"
        print(f"{name:<18}{p50:>9.1f}{percentile(values, 0.9):>9.1f}{min(values):>9.1f}{extra:>9}")
    direct = timings["vllm direct"]
    paths = {}
    for name, values in timings.items():
        summary = latency_summary(values)
        if name != "vllm direct":
            summary["added_p50_ms"] = summary["p50_ms"] - percentile(direct, 0.5)
            summary["added_p99_ms"] = summary["p99_ms"] - percentile(direct, 0.99)
            summary["throughput_vs_direct"] = sum(direct) / sum(values)
        paths[name] = summary
    write_results(
        args.json,
        "answer_latency",
        {"requests": args.requests, "max_tokens": args.max_tokens, "paths": paths},
    )


def _chat(args: argparse.Namespace, question: str) -> dict[str, object]:
    """A greedy chat completion of `question` (temperature 0: every path answers alike)."""
    messages = [{"role": "user", "content": question}]
    return {"messages": messages, "max_tokens": args.max_tokens, "temperature": 0,
            "model": args.model}  # fmt: skip


if __name__ == "__main__":
    main()
