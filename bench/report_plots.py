"""The report's plots (PNG, matplotlib), where people would rather look than read.

Latency distributions of the gateway against the stub and a bare proxy, RAG query latency
against the store's size, and the learning cycle's per-category scores before and after.
A plot whose benchmark did not measure anything is not drawn; old plots are removed first,
so the folder only ever holds this run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter, NullFormatter


def draw(report: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    benches = report["benches"]
    drawn = []
    for name, plot in (
        ("gateway_overhead", _gateway_latency),
        ("rag_latency", _rag_latency),
        ("learning", _learning),
    ):
        run = benches.get(name) or {}
        if run.get("status") == "measured":
            path = folder / f"{name}.png"
            if plot(run["figures"], path):
                drawn.append(path)
    return drawn


def _gateway_latency(figures: dict[str, Any], path: Path) -> bool:
    rows = [r for r in figures["rows"] if r["latency"].get("distribution_ms")]
    if not rows:
        return False
    levels = sorted({(r["stream"], r["concurrency"]) for r in rows})
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4), squeeze=False)
    for axis, (stream, concurrency) in zip(axes[0], levels, strict=True):
        for r in rows:
            if (r["stream"], r["concurrency"]) != (stream, concurrency):
                continue
            points = sorted((float(v), int(q)) for q, v in r["latency"]["distribution_ms"].items())
            axis.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=r["target"])
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels overlap
        what = "time to first event" if stream else "latency"
        axis.set_title(f"{'streams' if stream else 'requests'}, concurrency {concurrency}")
        axis.set_xlabel(f"{what} (ms, log)")
        axis.set_ylabel("percentile")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    fig.suptitle("Gateway overhead over a stub engine: latency distribution")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _rag_latency(figures: dict[str, Any], path: Path) -> bool:
    sizes = figures["sizes"]
    if not sizes:
        return False
    chunks = [s["chunks"] for s in sizes]
    fig, axis = plt.subplots(figsize=(6, 4))
    for part in ("end_to_end", "embedding", "chroma"):
        for key, style in (("p50_ms", "-o"), ("p99_ms", "--x")):
            values = [s["queries"]["current"][part].get(key) for s in sizes]
            axis.plot(chunks, values, style, label=f"{part} {key[:3]}")
    axis.set_xscale("log")
    axis.set_xlabel("chunks in the store (log)")
    axis.set_ylabel("query latency (ms)")
    axis.set_title("RAG query latency against the store's size")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _learning(figures: dict[str, Any], path: Path) -> bool:
    if not figures["rounds"]:
        return False
    last = figures["rounds"][-1]
    names = sorted(last["categories"])
    before = [last["categories"][n]["active"] or 0 for n in names]
    after = [last["categories"][n]["shadow"] or 0 for n in names]
    fig, axis = plt.subplots(figsize=(max(6, len(names) * 1.1), 4))
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], before, width=0.4, label="before (Active)")
    axis.bar([p + 0.2 for p in positions], after, width=0.4, label="after (Shadow)")
    axis.set_xticks(list(positions), names, rotation=30, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("held-out score")
    verdict = "passed" if last["passed"] else "rejected"
    axis.set_title(f"Learning: QA round {last['round']} per category (gate {verdict})")
    axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
