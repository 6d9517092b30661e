"""What the demo prints: chapters, answers side by side, the QA report, the summary table.

Only this module knows rich; the steps hand it plain values. A `Console` is injected, so
tests read what a person would see (`Console(file=StringIO(), width=...)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table


@dataclass(frozen=True)
class SummaryRow:
    """One line of the closing table: a step, what it was before and after, its seconds."""

    step: str
    before: str
    after: str
    seconds: float | None  # None: a figure of the step above (its time counted there)


@dataclass(frozen=True)
class AnswerLine:
    question: str
    answer: str
    right: bool
    note: str = ""


class Narrator:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._last_progress = ""

    def title(self, gateway: str, fast: bool) -> None:
        mode = "fast (fewer facts, fewer steps)" if fast else "full"
        self.console.print(
            Panel(
                "[bold]twinloop demo[/bold]: a service that learns while it serves.\n"
                f"Gateway {escape(gateway)}, {mode}. Every step below is a call to its public "
                "API — what any client app or operator can do.",
                expand=False,
            )
        )

    def chapter(self, number: int, title: str, why: str) -> None:
        self._last_progress = ""
        self.console.print()
        self.console.print(Rule(f"[bold]{number}. {escape(title)}[/bold]", align="left"))
        self.console.print(f"[dim]{escape(why)}[/dim]")

    def say(self, text: str) -> None:
        self.console.print(escape(text))

    def good(self, text: str) -> None:
        self.console.print(f"[green]✔[/green] {escape(text)}")

    def bad(self, text: str) -> None:
        self.console.print(f"[red]✘[/red] {escape(text)}")

    def progress(self, text: str) -> None:
        """A line of a long wait, printed only when it changes."""
        if text != self._last_progress:
            self.console.print(f"  [cyan]…[/cyan] {escape(text)}")
            self._last_progress = text

    def answers(self, title: str, lines: Sequence[AnswerLine]) -> None:
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("question", overflow="fold", ratio=2)
        table.add_column("answer", overflow="fold", ratio=3)
        table.add_column("right?", justify="center")
        for line in lines:
            mark = "[green]yes[/green]" if line.right else "[red]no[/red]"
            answer = escape(line.answer.strip().replace("\n", " "))
            if line.note:
                answer += f" [dim]({escape(line.note)})[/dim]"
            table.add_row(escape(line.question), answer, mark)
        self.console.print(table)

    def qa_report(self, report: dict[str, Any]) -> None:
        """The categories that tell the story (taught facts, forgetting), then the others."""
        table = Table(title=f"QA run {report['id']}", title_justify="left")
        for column in ("category", "held-out cases", "Shadow", "Active", "paired test"):
            table.add_column(column)
        order = {"feedback": 0, "forgetting": 1}
        names = {
            "feedback": "taught facts (paraphrases)",
            "forgetting": "general holdout",
        }
        for c in sorted(report["categories"], key=lambda c: order.get(c["category"], 2)):
            table.add_row(
                names.get(c["category"], c["category"]),
                str(c["heldout"]),
                _score(c.get("score")),
                _score(c.get("active_score")),
                _paired(c.get("comparison")),
            )
        self.console.print(table)
        verdict = {True: "[green]PASSED[/green]", False: "[red]REJECTED[/red]"}.get(
            report["passed"], "not gated"
        )
        self.console.print(
            f"gate: {verdict}, overall {_score(report.get('overall'))} against Active's "
            f"{_score(report.get('active_overall'))}"
        )
        for reason in report.get("reasons") or []:
            self.console.print(f"  - {escape(reason)}")

    def summary(self, rows: Sequence[SummaryRow], total_s: float) -> None:
        self.console.print()
        table = Table(title="What happened", title_justify="left", show_lines=True)
        table.add_column("step")
        table.add_column("before", overflow="fold")
        table.add_column("after", overflow="fold")
        table.add_column("time", justify="right")
        for row in rows:
            seconds = "" if row.seconds is None else f"{row.seconds:.0f} s"
            table.add_row(escape(row.step), escape(row.before), escape(row.after), seconds)
        table.add_row("[bold]total[/bold]", "", "", f"[bold]{total_s:.0f} s[/bold]")
        self.console.print(table)

    def look_deeper(self, gateway: str, adapter_id: str | None) -> None:
        lines = [
            f"twinloop status --gateway {gateway}        both slots, the latest cycle and QA run, "
            "the canary",
            f"twinloop canary status --gateway {gateway} the canary's arms side by side",
            "Grafana: dashboards/*.json (the gateway's and the trainer's twinloop_* metrics)",
        ]
        if adapter_id:
            lines.append(
                f'curl -H "authorization: Bearer $TWINLOOP_ADMIN_TOKEN" '
                f"{gateway}/adapters/{adapter_id}/lineage   what taught the promoted adapter"
            )
        self.console.print(Panel("\n".join(escape(line) for line in lines), title="look deeper"))

    def failed(self, message: str) -> None:
        self.console.print(f"\n[red bold]demo stopped:[/red bold] {escape(message)}")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _paired(test: dict[str, Any] | None) -> str:
    if not test:
        return "-"
    verdict = "[red]regressed[/red]" if test["regressed"] else "ok"
    return f"lost {test['losses']}, gained {test['gains']} of {test['cases']}: {verdict}"
