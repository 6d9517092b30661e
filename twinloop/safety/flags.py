"""What a screen found and did, as the answer record, the response and the metrics carry it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Screen(StrEnum):
    INPUT = "input"  # the question, or a chat's user and assistant messages
    CONTEXT = "context"  # a retrieved passage, before it goes into the prompt
    OUTPUT = "output"  # the answer (and the passages a client is shown)


class Action(StrEnum):
    BLOCKED = "blocked"  # the request was refused
    DROPPED = "dropped"  # the passage was left out
    REDACTED = "redacted"  # the PII was replaced by a placeholder
    FLAGGED = "flagged"  # recorded only: the text went on as it was


@dataclass(frozen=True)
class Flag:
    """One finding: which screen, which rule (an injection rule, or a PII kind), what was done,
    where (`question`, `messages[2]`, `answer`, `context:<doc id>`) and how many times."""

    screen: Screen
    rule: str
    action: Action
    where: str
    count: int = 1

    def as_json(self) -> dict[str, str | int]:
        return {
            "screen": self.screen.value,
            "rule": self.rule,
            "action": self.action.value,
            "where": self.where,
            "count": self.count,
        }
