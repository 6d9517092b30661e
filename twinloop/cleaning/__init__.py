"""Step 2 of the learning loop: clean candidate examples before anything trains on them.

Every candidate ends either in `accepted` or in `quarantined` with the rule that
stopped it and a reason a reviewer can read; nothing is silently dropped, and
`counts` holds every rule's hits. The rules run in this fixed order, and an
example is quarantined by the first rule that fires:

1. **redact** (never quarantines): PII in question and answer becomes a
   placeholder — `[EMAIL]`, `[IBAN]` (mod-97 checksum), `[CARD]` (13-19 digits,
   Luhn), `[SSN]` (US, dashed), `[IP]` (IPv4), `[PHONE]` (the `phonenumbers`
   library, numbers valid for one of `phone_regions` or written with `+`).
   It runs on every example, so quarantined ones carry no PII either.
2. **empty**: blank question or answer.
3. **injection**: prompt-injection / data-poisoning screen on question and answer.
   It runs before the length rules so a hostile item is labelled as hostile.
4. **too_short** / **too_long**: character limits, measured on the redacted text.
5. **repetition**: `bigram_repetition_ratio` of question or answer not below
   `max_bigram_repetition`.
6. **duplicate**: near-duplicate of an earlier accepted example (input order wins).
7. **source_cap**, then 8. **category_cap**: no group exceeds its share.

Output order is input order for both lists. The package is pure: no I/O, no model.
`pipeline.clean` runs the rules; each has its module: `redaction`, `injection`, `dedup`
(repetition and near-duplicates), `caps`; `examples` holds what goes in and comes out,
`config` the limits.
"""
