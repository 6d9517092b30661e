"""`twinloop demo`: the whole learning loop told in the terminal, against a running stack.

It speaks to the gateway over HTTP only — the same public API any client app and any
operator uses (`/answer`, `/ingest`, `/train`, `/qa`, `/canary`, `/status`, `/keys`) — so
what it shows is what the service does, not what a test harness arranges. The story, one
function per step (`steps.py`, `cycle.py`, `canary.py`), driven by `driver.run_demo`:

1. questions about a made-up organisation (`data/organisation.jsonl`) that Active, the base
   model, gets wrong;
2. corrections (with held-out paraphrases for QA) and a document sent through `/ingest`;
3. Shadow answers from retrieval at once, Active is unchanged;
4. a training cycle (`/train`) followed to its QA report: taught facts on held-out
   paraphrases and the general holdout, Shadow against Active;
5. a canary: simulated users on a client key ask and rate answers until the gateway's
   canary loop promotes Shadow by itself;
6. Active now answers the same questions right;
7. a deliberately bad update — an admin's per-cycle override with a high learning rate and
   no KL guard (`twinloop.training.overrides`) — is rejected by QA, or, should QA pass it,
   aborted by its canary; Active never serves it;
8. a summary table (before/after and seconds per step) and where to look deeper.

`--fast` (`plan.DemoPlan.fast`) teaches fewer facts and trains fewer steps.
"""
