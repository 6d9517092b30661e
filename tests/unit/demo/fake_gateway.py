"""A fake gateway for the demo's unit tests: the public routes it calls, behind MockTransport.

It keeps just enough state to tell the story: which facts each slot knows (Shadow learns a
correction at once, as a fact document would teach it), training cycles that advance one
state per `GET /train/{id}`, a canary that the "gateway" ends after `canary_requests` user
requests, and the refusals the real one gives (401, 409 for a QA-rejected Shadow).
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from twinloop.demo.data import load_facts, load_general

ADMIN = "fake-admin-token"
PROGRESS = ("queued", "collecting", "training", "qa")


@dataclass
class FakeGateway:
    bad_passes_qa: bool = False  # the over-trained cycle gets past QA
    bad_canary: str = "aborted"  # what its canary ends as
    good_canary: str = "promoted"
    good_cycle_ends: str = "awaiting_canary"
    canary_requests: int = 12  # user requests before the fake canary loop decides
    canary_running: bool = False  # a canary runs before the demo starts
    down: bool = False  # nothing listens
    no_trainer: bool = False  # requested cycles stay queued
    active_knows: set[str] = field(default_factory=set)
    shadow_knows: set[str] = field(default_factory=set)
    snapshots: dict[str, str] = field(default_factory=lambda: {"active": "s1", "shadow": "s1"})
    cycles: dict[str, dict[str, Any]] = field(default_factory=dict)
    canaries: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # secret -> id
    revoked: list[str] = field(default_factory=list)
    train_bodies: list[Any] = field(default_factory=list)
    ingested: list[dict[str, Any]] = field(default_factory=list)
    shadow_rejected: bool = False
    pending: list[str] = field(default_factory=list)  # fact ids taught by examples
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.facts = {f.id: f for f in load_facts()}
        self.general = {q.question: q for q in load_general()}
        if self.canary_running:
            self.canaries.append({"id": "c0", "status": "running"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- routing ----------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        with self._lock:
            return self._route(request)

    def _route(self, request: httpx.Request) -> httpx.Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        admin = bearer == ADMIN
        client = bearer in self.keys and self.keys[bearer] not in self.revoked
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else None
        if path == "/healthz":
            return _ok({"status": "ok"})
        if path == "/answer":
            return self._answer(body, admin=admin)
        if path == "/ingest" and (admin or client):
            return self._ingest(body)
        if not admin:
            return _error(401, "AuthenticationError", "a valid admin token is needed")
        if path == "/status":
            return _ok(self._status())
        if path == "/keys" and method == "POST":
            secret = f"tl_{next(self._ids)}"
            self.keys[secret] = f"k{len(self.keys) + 1}"
            return _ok({"id": self.keys[secret], "key": secret}, 201)
        if path.startswith("/keys/") and method == "DELETE":
            self.revoked.append(path.rsplit("/", 1)[1])
            return _ok({"id": path.rsplit("/", 1)[1]})
        if path == "/train" and method == "POST":
            return self._train(body)
        if path.startswith("/train/"):
            return _ok(self._advance(path.rsplit("/", 1)[1]))
        if path.startswith("/qa/"):
            return _ok(self._report(path.rsplit("/", 1)[1]))
        if path == "/snapshots" and method == "POST":
            assert body["adapters"] == {}
            self.snapshots["shadow"] = f"copy-of-{self.snapshots['active']}"
            self.shadow_knows, self.shadow_rejected = set(self.active_knows), False
            return _ok({"id": self.snapshots["shadow"]}, 201)
        if path == "/canary" and method == "POST":
            return self._start_canary(body)
        if path == "/canary/abort":
            self.canaries[-1]["status"] = "aborted"
            return _ok(self.canaries[-1])
        if path == "/canary":
            return _ok({"canary": self._canary_view()})
        return _error(404, "NotFoundError", f"no route {method} {path}")

    # -- answering and teaching -----------------------------------------------------------------

    def _answer(self, body: dict[str, Any], *, admin: bool) -> httpx.Response:
        target = body.get("target", "active")
        if target == "shadow" and not admin:
            return _error(403, "ForbiddenError", "previewing Shadow needs the admin role")
        role = "active"
        canary = self._running()
        if canary is not None and target == "active" and body.get("user_id"):
            role = "canary" if hash(body["user_id"]) % 2 else "active"
            canary["requests"][role] += 1
            self._decide(canary)
        knows = self.shadow_knows if target == "shadow" or role == "canary" else self.active_knows
        question = body["question"]
        answer = "I am not sure about that."
        for fact in self.facts.values():
            if question in (*fact.train_questions, *fact.test_questions) and fact.id in knows:
                answer = fact.answer
        if question in self.general:
            answer = f"It is {self.general[question].accept[0]}."
        n = next(self._ids)
        snapshot = self.snapshots["active"]
        return _ok({"answer_id": f"a{n}", "answer": answer, "role": role,
                    "snapshot_id": snapshot, "contexts": [{"doc_id": "d"}]})  # fmt: skip

    def _ingest(self, body: dict[str, Any]) -> httpx.Response:
        results = []
        for item in body["items"]:
            self.ingested.append(item)
            for fact in self.facts.values():
                if item.get("correction") == fact.answer:
                    self.shadow_knows.add(fact.id)
                if item.get("type") == "example" and item.get("answer") == fact.answer:
                    self.pending.append(fact.id)
            results.append({"id": item["id"], "type": item["type"], "status": "added"})
        return _ok({"items": results, "staging": "staged", "shadow_snapshot_id": "s2"}, 202)

    # -- training ---------------------------------------------------------------------------

    def _train(self, body: Any) -> httpx.Response:
        self.train_bodies.append(body)
        cycle_id = f"cy{len(self.cycles) + 1}"
        overrides = (body or {}).get("overrides") or {}
        self.cycles[cycle_id] = {
            "id": cycle_id, "state": "queued", "overrides": overrides, "adapters": {},
            "qa_rounds": [], "step_timings": {}, "progress": {}, "error": None,
            "bad": overrides.get("kl_weight") == 0,
        }  # fmt: skip
        return _ok({"cycle_id": cycle_id, "state": "queued", "overrides": overrides}, 202)

    def _advance(self, cycle_id: str) -> dict[str, Any]:
        cycle = self.cycles[cycle_id]
        if cycle["state"] in PROGRESS and not self.no_trainer:
            following = PROGRESS.index(cycle["state"]) + 1
            if following < len(PROGRESS):
                cycle["state"] = PROGRESS[following]
                cycle["progress"] = {"domain": "general", "step": 3, "total": 16}
            else:
                self._finish(cycle)
        return {k: v for k, v in cycle.items() if k != "bad"}

    def _finish(self, cycle: dict[str, Any]) -> None:
        passed = not cycle["bad"] or self.bad_passes_qa
        if not cycle["bad"]:
            passed = self.good_cycle_ends == "awaiting_canary"
        cycle["state"] = "awaiting_canary" if passed else (
            self.good_cycle_ends if not cycle["bad"] else "rejected")  # fmt: skip
        cycle["error"] = None if passed else "QA gate failed in round 1 of 1: forgetting regressed"
        cycle["adapters"] = {"general": f"ad-{cycle['id']}"}
        cycle["qa_rounds"] = [{"round": 1, "qa_run_id": f"qa-{cycle['id']}", "passed": passed}]
        cycle["step_timings"] = {"train": 12.0, "qa.1": 30.0}
        self.snapshots["shadow"] = f"snap-{cycle['id']}"
        self.shadow_rejected = not passed
        if cycle["bad"]:
            self.shadow_knows = {"bad"}  # over-trained: it forgot what it knew

    def _report(self, qa_run_id: str) -> dict[str, Any]:
        cycle = self.cycles[qa_run_id.removeprefix("qa-")]
        passed = cycle["qa_rounds"][0]["passed"]
        lost = 20 if cycle["bad"] else 1
        return {
            "id": qa_run_id, "passed": passed, "overall": 0.8, "active_overall": 0.7,
            "seconds": 30.0, "reasons": [] if passed else ["forgetting regressed"],
            "categories": [
                {"category": "feedback", "heldout": 4, "score": 1.0, "active_score": 0.0,
                 "comparison": {"losses": 0, "gains": 4, "cases": 4, "regressed": False}},
                {"category": "forgetting", "heldout": 36, "score": 1 - lost / 36,
                 "active_score": 0.97,
                 "comparison": {"losses": lost, "gains": 0, "cases": 36,
                                "regressed": cycle["bad"]}},
            ],
        }  # fmt: skip

    # -- the canary -------------------------------------------------------------------------

    def _running(self) -> dict[str, Any] | None:
        latest = self.canaries[-1] if self.canaries else None
        return latest if latest is not None and latest["status"] == "running" else None

    def _start_canary(self, body: dict[str, Any]) -> httpx.Response:
        if self.shadow_rejected:
            return _error(409, "ReleaseConflictError", "QA rejected Shadow's snapshot")
        cycle = next(c for c in reversed(self.cycles.values()) if c["state"] == "awaiting_canary")
        cycle["state"] = "canary"
        self.canaries.append({
            "id": f"c{len(self.canaries) + 1}", "status": "running", "cycle": cycle,
            "snapshot_id": self.snapshots["shadow"], "baseline_snapshot_id":
            self.snapshots["active"], "min_requests": body.get("min_requests", 200),
            "requests": {"active": 0, "canary": 0}, "reason": None,
        })  # fmt: skip
        return _ok(self._canary_view())

    def _decide(self, canary: dict[str, Any]) -> None:
        if sum(canary["requests"].values()) < self.canary_requests:
            return
        outcome = self.bad_canary if canary["cycle"]["bad"] else self.good_canary
        canary["status"], canary["reason"] = outcome, f"{outcome}: the fake canary loop decided"
        canary["cycle"]["state"] = {"promoted": "promoted"}.get(outcome, "rolled_back")
        if outcome == "promoted":
            self.snapshots["active"] = canary["snapshot_id"]
            self.active_knows = set(self.shadow_knows)

    def _canary_view(self) -> dict[str, Any] | None:
        if not self.canaries:
            return None
        c = self.canaries[-1]
        if "requests" not in c:
            return c
        return {
            "id": c["id"], "status": c["status"], "snapshot_id": c["snapshot_id"],
            "baseline_snapshot_id": c["baseline_snapshot_id"], "min_requests": c["min_requests"],
            "reason": c["reason"],
            "arms": {arm: {"requests": n} for arm, n in c["requests"].items()},
            "decisions": [{"reason": c["reason"]}] if c["reason"] else [],
        }  # fmt: skip

    def _status(self) -> dict[str, Any]:
        latest = list(self.cycles.values())[-1] if self.cycles else None
        return {
            "slots": [
                {"role": "active", "slot": "blue", "snapshot_id": self.snapshots["active"],
                 "engine_healthy": True},
                {"role": "shadow", "slot": "green", "snapshot_id": self.snapshots["shadow"],
                 "engine_healthy": True},
            ],
            "canary": self._canary_view(),
            "latest_training_cycle": latest and {"id": latest["id"], "state": latest["state"]},
        }  # fmt: skip


def _ok(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def _error(status: int, error: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "detail": detail})
