"""`bench/REPORT.md` from one `make bench` run's documents (`bench/report.py` gathers them).

Pure: a report dict in, Markdown out. Every figure comes from a benchmark's JSON; a section
whose benchmark did not run says so and why, one that failed shows the end of its output, so
the report never shows a number that this run did not measure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Section = Callable[[dict[str, Any]], list[str]]


def render(report: dict[str, Any], plots: Sequence[Path], output: Path) -> str:
    benches = report["benches"]
    lines = [
        "# twinloop benchmark report",
        "",
        f"Generated {report['generated_at']} by `make bench` (`bench/report.py`"
        f"{' --quick' if report.get('quick') else ''}); every figure below was measured in "
        "that one run, each ratio side by side on the same machine. "
        "Machine-readable: [report.json](report.json).",
        "",
        *_machine(report["machine"]),
    ]
    for title, name, section in SECTIONS:
        lines += ["", f"## {title}", ""]
        run = benches.get(name)
        if run is None:
            lines.append("Not part of this run (`--only`).")
        elif run["status"] == "not run":
            lines.append(f"Not run: {run['why']}.")
        elif run["status"] == "failed":
            lines += [
                f"**Failed** (exit status {run['exit_code']}) after {run['seconds']:.0f} s: "
                f"`{run['command']}`. The end of its output:",
                "",
                "```",
                *run["output_tail"],
                "```",
            ]
        else:
            lines += [f"`{run['command']}`, {run['seconds']:.0f} s.", ""]
            lines += section(run)
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(output).as_posix()})" for p in plots]
    return "\n".join(lines) + "\n"


def _machine(m: dict[str, Any]) -> list[str]:
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    return [
        f"**Machine:** {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, "
        f"{m['memory_gib']} GiB, GPU: {m['gpu'] or 'none'}; {m['platform']}, Python "
        f"{m['python']}; {packages}; commit `{m['commit']}`; load average at the end "
        f"{', '.join(str(x) for x in m['load_average'])}.",
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows),
    ]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _ms(summary: dict[str, Any], key: str) -> float | None:
    value = summary.get(key)
    return None if value is None else float(value)


def _gateway_overhead(run: dict[str, Any]) -> list[str]:
    figures = run["figures"]
    rows = [
        [
            r["target"],
            ("stream " if r["stream"] else "") + str(r["concurrency"]),
            r["events_per_s"] if r["stream"] else r["requests_per_s"],
            r.get("throughput_vs_direct"),
            r.get("throughput_vs_proxy"),
            _ms(r["latency"], "p50_ms"),
            _ms(r["latency"], "p99_ms"),
            r.get("added_p50_ms_vs_direct"),
            r.get("added_p99_ms_vs_direct"),
            r["failed"],
        ]
        for r in figures["rows"]
    ]
    return [
        f"A stub engine ({figures['upstream']}) answers at once, so every millisecond is HTTP, "
        f"JSON, routing and the answer's write, never generation; gateway: "
        f"{figures['gateway_workers']} worker(s) on {figures['database']}. `direct` is the stub "
        "itself, `proxy-*` a bare FastAPI app forwarding to it (the least a Python gateway "
        "does). Streams: events/s and time to the first event.",
        "",
        *_table(
            [
                "target",
                "concurrency",
                "req/s (ev/s)",
                "x direct",
                "x bare proxy",
                "p50 ms",
                "p99 ms",
                "+p50 ms vs direct",
                "+p99 ms vs direct",
                "failed",
            ],
            rows,
        ),
    ]


def _answer_latency(run: dict[str, Any]) -> list[str]:
    figures = run["figures"]
    rows = [
        [
            name,
            _ms(s, "p50_ms"),
            _ms(s, "p99_ms"),
            s.get("added_p50_ms"),
            s.get("added_p99_ms"),
            s.get("throughput_vs_direct"),
        ]
        for name, s in figures["paths"].items()
    ]
    return [
        f"One request at a time, interleaved, greedy, max_tokens={figures['max_tokens']}: the "
        "same question on each path up to a request number (so no answer cache helps), so "
        "the difference is what the gateway adds over real vLLM.",
        "",
        *_table(["path", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "throughput x direct"], rows),
    ]


def _swap(run: dict[str, Any]) -> list[str]:
    f = run["figures"]
    rows = [
        [f"{kind} ({where})", _ms(s, "p50_ms"), _ms(s, "p99_ms"), s.get("count")]
        for where in ("client", "gateway")
        for kind, s in f[where].items()
    ]
    return [
        f"{f['flips']} swaps and rollbacks alternating in {f['seconds']:.0f} s while "
        f"{f['clients']} clients sent `/answer`: **{f['requests']} requests served, "
        f"{f['failed_requests']} failed**. Client: admin HTTP call included; gateway: its "
        "`took_ms`.",
        "",
        *_table(["change", "p50 ms", "p99 ms", "n"], rows),
    ]


def _rag_latency(run: dict[str, Any]) -> list[str]:
    f = run["figures"]
    rows = []
    for size in f["sizes"]:
        current = size["queries"]["current"]
        rows.append(
            [
                size["chunks"],
                size["ingest_chunks_per_s"],
                _ms(current["end_to_end"], "p50_ms"),
                _ms(current["end_to_end"], "p99_ms"),
                _ms(current["embedding"], "p50_ms"),
                _ms(current["chroma"], "p50_ms"),
                current["recall"],
            ]
        )
    return [
        f"Chroma server and the bundled MiniLM embedder on this machine; queries at the newest "
        f"version, top_k={f['top_k']}.",
        "",
        *_table(
            [
                "chunks",
                "ingest chunks/s",
                "query p50 ms",
                "query p99 ms",
                "embedding p50 ms",
                "Chroma p50 ms",
                f"recall@{f['top_k']}",
            ],
            rows,
        ),
    ]


def _safety(run: dict[str, Any]) -> list[str]:
    f = run["figures"]
    rows = [
        [
            route,
            _ms(r["off"], "p50_ms"),
            _ms(r["on"], "p50_ms"),
            _ms(r["added"], "p50_ms"),
            _ms(r["added"], "p90_ms"),
        ]
        for route, r in f["routes"].items()
    ]
    return [
        f"The same in-process gateway with the screens off and on, {f['requests']} requests "
        f"each, alternating; an answer of {f['answer_chars']} characters with PII to redact.",
        "",
        *_table(["route", "off p50 ms", "on p50 ms", "added p50 ms", "added p90 ms"], rows),
    ]


def _canary(run: dict[str, Any]) -> list[str]:
    rows = [
        [
            r["scenario"],
            r["mode"],
            r["status"],
            r["seconds"],
            r["active"] + r["canary"],
            r["canary"],
            r["errors"],
        ]
        for r in run["figures"]["runs"]
    ]
    return [
        "A Shadow staged and canaried on simulated users who thumb answers up or down by "
        "whether they are right; `bad` is a garbling random LoRA, `good` a copy of Active.",
        "",
        *_table(
            [
                "Shadow",
                "mode",
                "decision",
                "time to decision s",
                "user requests",
                "on the canary arm",
                "user-visible errors",
            ],
            rows,
        ),
    ]


def _learning(run: dict[str, Any]) -> list[str]:
    f = run["figures"]
    lines = [
        f"{f['facts']} made-up facts ({f['examples']} examples) taught through `/ingest`, "
        f"one `/train` cycle: ended **{f['state']}** in {f['seconds']:.0f} s.",
        "",
        "Time per phase:",
        "",
        *_table(["phase", "seconds"], sorted(f["step_seconds"].items(), key=lambda kv: -kv[1])),
    ]
    for domain, adapter in sorted(f["adapters"].items()):
        lines += [
            "",
            f"Adapter `{domain}`: {adapter['steps']} steps, {adapter['seconds_per_step']:.2f} "
            "s/step.",
        ]
    for qa_round in f["rounds"]:
        verdict = "passed" if qa_round["passed"] else "rejected"
        lines += [
            "",
            f"QA round {qa_round['round']} ({qa_round['seconds']} s): gate {verdict}. Before "
            "(Active) and after (Shadow), held-out cases:",
            "",
            *_table(
                ["category", "before (Active)", "after (Shadow)", "cases", "floor"],
                [
                    [name, c["active"], c["shadow"], c["heldout"], c["floor"]]
                    for name, c in sorted(qa_round["categories"].items())
                ],
            ),
        ]
        lines += [f"- {reason}" for reason in qa_round["reasons"]]
    return lines


def _api_fuzz(run: dict[str, Any]) -> list[str]:
    return ["Passed: no server error, every response as documented.", "", "```",
            *run["output_tail"], "```"]  # fmt: skip


SECTIONS: tuple[tuple[str, str, Section], ...] = (
    ("Gateway overhead over a stub engine", "gateway_overhead", _gateway_overhead),
    ("Gateway overhead over real vLLM", "answer_latency", _answer_latency),
    ("Swap and rollback under load", "swap", _swap),
    ("RAG query latency", "rag_latency", _rag_latency),
    ("Safety layer overhead", "safety_overhead", _safety),
    ("Canary time to decision", "canary", _canary),
    ("Learning: training cycle and efficacy", "learning", _learning),
    ("API fuzz (schemathesis)", "api_fuzz", _api_fuzz),
)
