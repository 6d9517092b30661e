"""Mined signals: weak preference pairs and candidate corrections from the answer log.

Most users never rate an answer, yet what they do next says something about it: they ask
again in other words (**retry**), ask exactly the same at once (**regenerate**), answer "no,
that's wrong" (**negative_followup**), or drop the stream (**abandoned**, stored by the
gateway with `finish_reason` `abandoned`). `signals` finds them per user (the key-scoped user
id, else the session), with their evidence: answer ids, similarity, seconds between, rule.

These are weak labels. A proposal moves through these states (`MinedState`):

    proposed ──(agreement)──→ agreed ──┐
       │  └──(admin accepts)→ accepted ┼──→ a pending training example, source `mined`
       └──(admin rejects)───→ rejected ←┘   (rejecting an agreed or accepted one deletes
    quarantined: the screen stopped it when mined  its example, taints what learned it)

* **proposed**: stored redacted after the same per-item screen as feedback at /ingest
  (`IngestScreen.texts`); never trained on.
* **agreed**: independent evidence backs it (`agreement`): a second rule on the same answer,
  or users (`mining.agreement_users`) unhappy with answers to similar questions of the domain.
* **accepted**: an admin reviewed it (`POST /mined/{id}/accept`, with their own answer when
  the proposal has none: a follow-up without a correction, an abandoned stream).
* **rejected** / **quarantined**: out for good; they back no agreement.

Agreed and accepted proposals become pending training examples (chosen = the later answer,
the user's correction or the admin's; rejected = the answer the signal rejects) that the
next cycle's collect step cleans with everything else, where mined items together keep at
most `mining.max_share` of the accepted set (cleaning's `mined_cap`), besides the per-user
source cap. Nothing mined goes into training any other way, and nothing mined becomes a
RAG fact document (a correction does at /ingest; a weak label must not be served); lineage
shows them as `mined` with their proposal. One pass adds at most `mining.max_per_source`
proposals per user.

**Where it runs**: in the trainer process, at the start of each cycle's collect step (so a
cycle learns what agreed up to that moment, and the mining happens exactly where its output
is used, with the trainer's embedding model), and every `mining.interval_s` while the
trainer idles (so proposals are there to review, and agreed items count towards the
schedule's `min_new_items`, even when no cycle runs). Never in the gateway: gateways are
replicas, and the trainer is one process that already owns the learning data; a pass is
idempotent anyway (`service`). The gateway only shows proposals and takes reviews
(`GET /mined`, `POST /mined/{id}/accept|reject`). `mining.enabled=false` turns it off.
"""
