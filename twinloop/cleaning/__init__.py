"""The screen: clean candidate examples before anything trains on them or serves them.

Every path that can teach the model or reach users passes it: feedback and examples at
/ingest (`twinloop.ingest.screening`, one item at a time, before they are stored or become
a correction's RAG fact document), the training cycle's collect step (the whole batch), the
taught facts QA builds cases from and the corrections QA makes. Live requests pass the same
rules through the safety layer (`twinloop.safety`: questions, retrieved passages, answers).

Every candidate ends either in `accepted` or in `quarantined` with the rule that
stopped it and a reason a reviewer can read; nothing is silently dropped, and
`counts` holds every rule's hits. The rules run in this fixed order, and an
example is quarantined by the first rule that fires:

1. **redact** (never quarantines): PII in question, answer and held-out texts becomes a
   typed placeholder — `[EMAIL]`, `[IBAN]`, `[CARD]`, `[SSN]`, `[IP]`, `[PHONE]` (what each
   finds, and what it leaves: `redaction`). It runs on every example, so quarantined ones
   carry no PII either.
2. **empty**: blank (or only invisible) question or answer.
3. **injection**: prompt-injection / data-poisoning screen on question, answer and held-out
   texts, read through Unicode normalisation, look-alike folding and joined or spaced-out
   words (`injection`). It runs before the length rules so a hostile item is labelled as
   hostile.
4. **too_short** / **too_long**: character limits, measured on the redacted text.
5. **repetition**: `bigram_repetition_ratio` of question or answer not below
   `max_bigram_repetition`.
6. **duplicate**: near-duplicate of an earlier accepted example (input order wins).
7. **mined_cap**: examples mined from the answer log (weak labels, `twinloop.mining`) hold
   together at most `max_share_mined` of what is left.
8. **source_cap**, then 9. **category_cap**: no group exceeds its share.

Rules 1-5 look at one example at a time (`pipeline.screen`, what the one-item paths use);
6-9 compare examples with each other and run only in `pipeline.clean`, on a batch.
Output order is input order for both lists. The package is pure: no I/O, no model.
Each rule has its module: `normalize` (what the screens read), `redaction`, `injection`,
`dedup` (repetition and near-duplicates), `caps`; `examples` holds what goes in and comes
out, `config` the limits.
"""
