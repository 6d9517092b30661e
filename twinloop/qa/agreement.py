"""Judge reliability: how often the judge agrees with users on answers they rated.

A user's thumbs-up says the served answer was right, a thumbs-down that it was wrong. Where
such an answer has a reference — the user's own correction, or a suite case asking the same
question in the same domain — the judge labels it too, and the two are compared. Kept per
category (the suite case's, or `feedback/<domain>` for corrections): a judge that drifts
away from its users is itself a defect, and this is where it shows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from twinloop.db.models import Answer, Feedback
from twinloop.qa.judges import ReferenceJudge, normalise
from twinloop.qa.schemas import Agreement
from twinloop.qa.suites import FORGETTING, TRAIN, QaCase, Suite


def judge_agreement(
    judge: ReferenceJudge, suite: Suite, rated: Sequence[tuple[Feedback, Answer]]
) -> dict[str, Agreement]:
    """Blocking (the judge embeds): call from a thread."""
    by_question: dict[tuple[str, str], QaCase] = {}
    for c in suite.cases:
        if c.category != FORGETTING:  # its cases are copies; the original's category counts
            by_question.setdefault((c.domain, normalise(c.question)), c)
    cases: list[QaCase] = []
    answers: list[str] = []
    users: list[bool] = []
    for feedback, answer in rated:
        known = by_question.get((answer.domain, normalise(answer.question)))
        if known is not None:
            case = known
        elif feedback.correction:
            case = QaCase(
                key=f"feedback-check/{feedback.id}",
                category=f"feedback/{answer.domain}",
                domain=answer.domain,
                question=answer.question,
                reference=feedback.correction,
                split=TRAIN,
            )
        else:
            continue
        cases.append(case)
        answers.append(answer.answer)
        users.append(feedback.rating == "up")
    verdicts = judge.judge_many(cases, answers, [[] for _ in cases])
    agreed: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for case, verdict, user_says_right in zip(cases, verdicts, users, strict=True):
        total[case.category] += 1
        agreed[case.category] += verdict.correct == user_says_right
    return {
        category: Agreement(agreed=agreed[category], total=n, rate=round(agreed[category] / n, 4))
        for category, n in sorted(total.items())
    }
