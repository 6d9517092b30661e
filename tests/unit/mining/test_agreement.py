"""When weak proposals agree enough to become trainable."""

from __future__ import annotations

from twinloop.mining.agreement import Proposal, agreements
from twinloop.mining.similarity import LexicalSimilarity
from twinloop.states import MinedState

SIMILARITY = LexicalSimilarity(threshold=0.5)
TENANCY = "What notice period applies to a tenancy in Zelland?"


def proposal(
    n: int,
    rule: str = "retry",
    *,
    answer: str | None = None,
    later: str | None = None,
    source: str = "u1",
    question: str = TENANCY,
    chosen_from: str | None = "later_answer",
    state: str = MinedState.PROPOSED,
    domain: str = "law",
) -> Proposal:
    return Proposal(
        id=f"p{n}",
        rule=rule,
        state=state,
        answer_id=answer or f"a{n}",
        later_answer_id=later or f"b{n}",
        source=source,
        domain=domain,
        question=question,
        chosen_from=chosen_from,
    )


def agreed(*proposals: Proposal) -> dict[str, str]:
    sims = SIMILARITY.matrix([p.question for p in proposals])
    found = agreements(proposals, sims, threshold=SIMILARITY.threshold, users=2)
    return {pid: agreement["kind"] for pid, agreement in found.items()}


def test_one_weak_signal_is_not_enough() -> None:
    assert agreed(proposal(1)) == {}
    # Nor two signals of one user on different answers to the same question.
    assert agreed(proposal(1), proposal(2)) == {}


def test_two_rules_on_one_answer_agree() -> None:
    retry = proposal(1, answer="a1")
    followup = proposal(2, "negative_followup", answer="a1", chosen_from="followup")

    assert agreed(retry, followup) == {"p1": "signals", "p2": "signals"}
    # An abandoned stream has nothing to teach, but it backs the retry.
    abandoned = proposal(3, "abandoned", answer="a1", chosen_from=None)
    assert agreed(retry, abandoned) == {"p1": "signals"}


def test_two_users_on_similar_questions_of_a_domain_agree() -> None:
    one = proposal(1, source="u1")
    other = proposal(2, source="u2", question="Zelland tenancy: which notice period applies?")

    assert agreed(one, other) == {"p1": "users", "p2": "users"}
    assert agreed(one, proposal(2, source="u2", domain="fin")) == {}
    assert agreed(one, proposal(2, source="u2", question="How do I treat a fever?")) == {}


def test_a_contested_choice_and_settled_proposals_are_not_agreed_again() -> None:
    # p1's chosen answer (b1) is what p2 rejects: the user retried it again.
    contested = proposal(1, answer="a1", later="b1")
    again = proposal(2, answer="b1", source="u2")
    assert "p1" not in agreed(contested, again)

    accepted = proposal(3, state=MinedState.ACCEPTED, source="u2")
    assert agreed(proposal(1), accepted) == {"p1": "users"}  # backs it, is not agreed again
