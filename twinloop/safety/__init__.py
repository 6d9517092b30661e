"""The safety layer: screens on what /answer and /v1 take in and give out.

The same rules that screen training data (`twinloop.cleaning`: Unicode-normalised injection
rules, PII redaction) screen live requests, at three places:

1. **input** (`screens.screen_input`): the question of /answer, the user and assistant messages
   of /v1 (system and developer messages are the calling application's own instructions,
   what this screen protects), for wording aimed at the model's instructions
   (`cleaning.injection.INSTRUCTION_RULES`: override, jailbreak persona, "no restrictions",
   a new system prompt, prompt leaks, chat-template tokens, hidden tag text). The poisoning
   rules are left out: "from now on, answer in French" or "my password is ... and login
   fails" are ordinary things to ask.
2. **context** (`screens.screen_passage`): each retrieved passage, before it goes into the
   prompt, against every cleaning rule, poisoning included (a document that gives standing
   orders is the indirect injection a retrieval prompt invites; /ingest does not screen
   documents). A passage that matches is dropped from the prompt and from the answer's
   `contexts`; a kept one is redacted like an answer.
3. **output** (`screens.screen_output`, `stream.StreamRedactor`): PII in the answer, whole or
   streamed, replaced by the cleaning step's placeholders (`[EMAIL]`, `[CARD]`, ...).

Each screen has a mode (`TWINLOOP_SAFETY__INPUT=block|flag|off`,
`TWINLOOP_SAFETY__CONTEXTS=drop|flag|off`, `TWINLOOP_SAFETY__OUTPUT=redact|flag|off`); what
each found and did is a `flags.Flag`, stored with the answer, returned with it and counted.

**Defaults: block, drop, redact.** Input is blocked rather than only flagged because a match
is not a near miss: every instruction rule needs wording aimed at the model's own
instructions ("ignore all previous instructions", a `<|im_start|>system` token, a request for
the system prompt), and none of the 370 distinct ordinary questions shipped with twinloop
(QA suites, routing set, general hold-out, made-up facts: `tests/unit/safety`) matches one,
while a flagged attack has already reached the model next to the domain's retrieved
documents. A blocked request costs its sender a rephrasing; the 422 names the rule. Flag is
there for a deployment that would rather watch first (a false positive then costs nothing
but a record). Passages are dropped because a document is not the user's words: losing one
passage of three costs an answer little, following it costs the answer. Output is redacted
because the answer is what the client stores and shows.
"""
