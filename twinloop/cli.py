"""The `twinloop` command: prepare models, run engines, migrate, serve."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from rag.server import ChromaServer
from twinloop.db import migrate
from twinloop.db.session import create_engine, create_sessionmaker
from twinloop.engines.process import EngineProcesses
from twinloop.errors import TwinloopError
from twinloop.identity.admin_token import ensure_admin_token_file, load_admin_token
from twinloop.logging import configure_logging
from twinloop.metrics import MULTIPROCESS_ENV
from twinloop.processes import NotHealthyError
from twinloop.registry.schemas import AdapterView
from twinloop.registry.service import AdapterRegistry
from twinloop.settings import Settings, Slot
from twinloop.states import CycleState
from twinloop.trainer.process import TrainerProcess
from twinloop.training.schemas import CycleView

app = typer.Typer(
    help="twinloop: blue/green serving for LLMs that keep learning.", no_args_is_help=True
)
models_app = typer.Typer(help="Prepare the base and embedding models.", no_args_is_help=True)
engines_app = typer.Typer(
    help="Start, stop and inspect the two vLLM engines.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
adapters_app = typer.Typer(help="The LoRA adapter registry.", no_args_is_help=True)
canary_app = typer.Typer(
    help="The canary of the staged Shadow, through the running gateway's admin API.",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="API keys for client apps, through the running gateway's admin API.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
app.add_typer(engines_app, name="engines")
app.add_typer(db_app, name="db")
app.add_typer(adapters_app, name="adapters")
app.add_typer(canary_app, name="canary")
app.add_typer(keys_app, name="keys")
mined_app = typer.Typer(
    help="Weak signals mined from the answer log: list, accept, reject (through the running "
    "gateway's admin API).",
    no_args_is_help=True,
)
app.add_typer(mined_app, name="mined")

# Messages and errors name paths and URLs: wrapped at the terminal's width they no longer copy.
console = Console(stderr=True, soft_wrap=True)

SlotOption = Annotated[
    list[Slot] | None, typer.Option("--slot", help="Only this slot (repeatable); default both.")
]


def _fail(error: TwinloopError) -> typer.Exit:
    console.print(f"[red]error:[/red] {error.message}")
    return typer.Exit(code=1)


def _gateway_settings() -> Settings:
    """Settings for a command that runs or calls the gateway; a refused setting (the admin
    token) is a one-line error, not a traceback."""
    try:
        return Settings()
    except ValidationError as e:
        for problem in e.errors():
            console.print(f"[red]error:[/red] {problem['msg'].removeprefix('Value error, ')}")
        raise typer.Exit(code=1) from e


def _spinner() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    )


@models_app.command("prepare")
def models_prepare() -> None:
    """Turn the shipped SmolLM2 GGUF into a Hugging Face folder; find the embedding model."""
    try:
        _prepare_models(Settings())
    except TwinloopError as e:
        raise _fail(e) from e


def _prepare_models(settings: Settings) -> None:
    from twinloop.weights.prepare import prepare_models

    with _spinner() as progress:
        task = progress.add_task("preparing models", total=None)
        report = prepare_models(
            settings, on_step=lambda step: progress.update(task, description=step)
        )
        if settings.embeddings.backend != "torch":
            # The ONNX graph is exported here once, so the gateway's first start need not.
            from twinloop.runtime import load_embedder

            progress.update(task, description="exporting the embedding model to ONNX")
            load_embedder(settings)
    console.print(report.summary())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to the configured database."""
    settings = Settings()
    migrate.upgrade(settings.sqlalchemy_url)
    console.print("database is at the newest schema")


@adapters_app.command("register")
def adapters_register(
    path: Annotated[Path, typer.Argument(help="A PEFT LoRA adapter folder.")],
    domain: Annotated[str, typer.Option(help="The domain it serves.")],
    parent: Annotated[str | None, typer.Option(help="The adapter version it refines.")] = None,
) -> None:
    """Register an adapter trained elsewhere: checked, copied under its sha256, recorded."""
    try:
        view = asyncio.run(_register_adapter(Settings(), path, domain, parent))
    except TwinloopError as e:
        raise _fail(e) from e
    console.print(f"registered {view.name} (id {view.id}, sha256 {view.sha256})")


async def _register_adapter(
    settings: Settings, path: Path, domain: str, parent: str | None
) -> AdapterView:
    db = create_engine(settings.sqlalchemy_url, sqlite_synchronous=settings.sqlite_synchronous)
    registry = AdapterRegistry.from_settings(settings)
    try:
        async with create_sessionmaker(db).begin() as session:
            adapter = await registry.register(
                session, source=path, domain=domain, parent_id=parent, actor="cli"
            )
            return AdapterView.model_validate(adapter)
    finally:
        registry.store.close()
        await db.dispose()


@adapters_app.command("check-store")
def adapters_check_store(
    create: Annotated[
        bool, typer.Option("--create", help="Make the bucket (or folder) when it is missing.")
    ] = False,
) -> None:
    """Check the adapter store is reachable and writable: a probe is written, read, deleted."""
    from adapters.artifacts import open_store

    settings = Settings()
    store = open_store(settings)
    try:
        store.check(create=create)
    except TwinloopError as e:
        raise _fail(e) from e
    finally:
        store.close()
    console.print(f"adapter store {store.location} ({store.kind}): reachable and writable")


@adapters_app.command("fetch-agent")
def adapters_fetch_agent() -> None:
    """Run the fetch agent beside an engine: verified adapter copies on the engine's disk."""
    from twinloop.fetch_agent import create_fetch_agent

    settings = Settings()
    agent = settings.artifacts
    _run_http(create_fetch_agent(settings), agent.agent_host, agent.agent_port, settings)


GatewayOption = Annotated[
    str | None,
    typer.Option("--gateway", help="The gateway's URL; default from TWINLOOP_GATEWAY__HOST/PORT."),
]


def _gateway_client(settings: Settings, url: str | None) -> httpx.Client:
    """An admin client of the running gateway (the canary lives in its memory); the token is
    TWINLOOP_ADMIN_TOKEN, else the one `twinloop up` wrote into the data directory."""
    base = url or f"http://{settings.gateway.host}:{settings.gateway.port}"
    token = load_admin_token(settings)
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60.0)


def _admin_call(url: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One admin API call; the gateway's JSON error becomes a one-line error and exit 1."""
    try:
        with _gateway_client(_gateway_settings(), url) as client:
            response = client.request(method, path, json=body)
    except TwinloopError as e:
        raise _fail(e) from e
    except httpx.HTTPError as e:
        console.print(f"[red]error:[/red] the gateway cannot be reached: {e}")
        raise typer.Exit(code=1) from e
    payload = response.json()
    if response.status_code >= 400:
        console.print(f"[red]error:[/red] {payload.get('error')}: {payload.get('detail')}")
        raise typer.Exit(code=1)
    return payload


@app.command("status")
def status(gateway: GatewayOption = None) -> None:
    """The running gateway's `/status` in the terminal: both slots, the latest training cycle
    and QA run, tainted adapters, the canary and the safety layer (for people without
    Grafana)."""
    _print_status(_admin_call(gateway, "GET", "/status"))


def _print_status(status: dict[str, Any]) -> None:
    out = Console()
    out.print(f"release generation {status['generation']}")
    slots = Table("role", "slot", "snapshot", "adapters", "engine", "in flight", "missing")
    for s in sorted(status["slots"], key=lambda s: s["role"]):
        adapters = ", ".join(f"{d}={a}" for d, a in sorted(s["adapters"].items())) or "base"
        engine = "healthy" if s["engine_healthy"] else "[red]unhealthy[/red]"
        missing = ", ".join(s["missing_adapters"]) or "-"
        row = (s["role"], s["slot"], s["snapshot_id"], adapters, engine, str(s["inflight"]))
        slots.add_row(*row, missing)
    out.print(slots)
    cycle = status.get("latest_training_cycle")
    if cycle:
        error = f" ({cycle['error']})" if cycle.get("error") else ""
        out.print(f"latest training cycle {cycle['id']}: [bold]{cycle['state']}[/bold]{error}")
        if cycle.get("overrides"):
            settings = ", ".join(f"{k} {v:g}" for k, v in sorted(cycle["overrides"].items()))
            out.print(f"  trained with an admin's override: {settings}")
    qa = status.get("latest_qa")
    if qa:
        verdict = {True: "passed", False: "failed", None: "not gated"}[qa["passed"]]
        out.print(
            f"latest QA {qa['id']}: {verdict}, overall {_cell(qa['overall'])} vs "
            f"Active {_cell(qa['active_overall'])}"
        )
        for reason in qa["reasons"]:
            out.print(f"  {reason}")
    artifacts = status.get("artifacts")
    if artifacts:
        out.print(f"adapter store {artifacts['store']} ({artifacts['backend']})")
        for slot, fetch in sorted(artifacts["slots"].items()):
            where = fetch.get("agent_url") or f"{fetch.get('engine_dir')}"
            out.print(f"  {slot}: fetched by {fetch['fetch']} into {where}")
    for tainted in status.get("tainted_adapters", []):
        serving = ", ".join(tainted["serving_slots"]) or "no slot"
        out.print(
            f"[yellow]tainted[/yellow] {tainted['name']} ({tainted['domain']}): "
            f"{tainted['reason']}; served by {serving}"
        )
    if status.get("canary"):
        _print_canary(status["canary"])
    else:
        out.print("no canary has run")
    if status.get("safety"):
        _print_safety(out, status["safety"])


def _print_safety(out: Console, safety: dict[str, Any]) -> None:
    out.print(
        f"safety: input {safety['input']}, contexts {safety['contexts']}, output "
        f"{safety['output']}; {safety['blocked_since_start']} blocked since start, "
        f"{safety['answers_with_findings']} answers with findings in {safety['window_hours']} h"
    )
    for finding in safety["findings"][:10]:
        out.print(
            f"  {finding['screen']} {finding['rule']} {finding['action']}: {finding['count']}"
        )


@canary_app.command("start")
def canary_start(
    percent: Annotated[float, typer.Argument(help="Share of users on the canary, 0-100.")],
    min_requests: Annotated[int | None, typer.Option(help="Requests per arm to promote.")] = None,
    max_duration_s: Annotated[float | None, typer.Option(help="Deadline, seconds.")] = None,
    mirror_percent: Annotated[
        float | None, typer.Option(help="Share of Active's requests also asked of Shadow.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Kept in the audit log.")] = "",
    gateway: GatewayOption = None,
) -> None:
    """Start a canary of the staged Shadow, or change the running one's percentage."""
    body: dict[str, Any] = {"percent": percent, "reason": reason}
    if min_requests is not None:
        body["min_requests"] = min_requests
    if max_duration_s is not None:
        body["max_duration_s"] = max_duration_s
    if mirror_percent is not None:
        body["mirror_percent"] = mirror_percent
    _print_canary(_admin_call(gateway, "POST", "/canary", body))


@canary_app.command("abort")
def canary_abort(
    reason: Annotated[str, typer.Argument(help="Why; kept with the canary.")],
    gateway: GatewayOption = None,
) -> None:
    """End the canary now: all traffic to Active, and Active back on its baseline."""
    _print_canary(_admin_call(gateway, "POST", "/canary/abort", {"reason": reason}))


@canary_app.command("status")
def canary_status(gateway: GatewayOption = None) -> None:
    """The running (else the latest) canary: both arms side by side, the decision so far."""
    canary = _admin_call(gateway, "GET", "/canary")["canary"]
    if canary is None:
        Console().print("no canary has run")
        return
    _print_canary(canary)


def _pending_share(canary: dict[str, Any]) -> bool:
    """A running canary whose (new) share applies later: `canary.split_delay_s` after it was
    set, so that every gateway switches at once."""
    starts = canary.get("percent_from")
    if canary.get("status") != "running" or not starts:
        return False
    return datetime.fromisoformat(starts) > datetime.now(UTC)


def _print_canary(canary: dict[str, Any]) -> None:
    out = Console()
    out.print(
        f"canary {canary['id']}: [bold]{canary['status']}[/bold], {canary['percent']:g} % of "
        f"users on snapshot {canary['snapshot_id']} (Active: {canary['baseline_snapshot_id']}), "
        f"{canary['elapsed_s']:.0f} s run, {canary['time_left_s']:.0f} s left"
    )
    if _pending_share(canary):
        before = canary.get("previous_percent")
        out.print(
            f"the share applies from {canary['percent_from']} on every gateway; until then "
            + (f"{before:g} %" if before is not None else "nobody is split")
        )
    table = Table("", "active", "canary")
    arms = canary["arms"]
    for key, label in (("requests", "requests"), ("engine_errors", "engine errors"),
                       ("timeouts", "timeouts"), ("error_rate", "error rate"),
                       ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("thumbs_up", "thumbs up"),
                       ("thumbs_down", "thumbs down"), ("corrections", "corrections"),
                       ("positive_rate", "positive rate")):  # fmt: skip
        table.add_row(label, *(_cell(arms[arm].get(key)) for arm in ("active", "canary")))
    unsticky = canary.get("unsticky_requests", {})
    table.add_row("without ids", *(_cell(unsticky.get(arm)) for arm in ("active", "canary")))
    out.print(table)
    latest = canary.get("current") or next(iter(canary.get("decisions") or []), None)
    pairs = (latest or {}).get("stats", {}).get("pairs", {}).get("tally")
    if pairs is not None and canary.get("mirror_percent"):
        out.print(
            f"mirrored pairs ({canary['mirror_percent']:g} % of Active's requests): "
            f"{pairs['wins']} won, {pairs['ties']} tied, {pairs['losses']} lost, "
            f"{pairs['undecided']} undecided; drifted on {pairs['drifted']} of "
            f"{pairs['drift_pairs']} general questions"
        )
    if canary.get("current"):
        out.print(f"now: {canary['current']['reason']}")
    elif canary.get("reason"):
        out.print(f"ended: {canary['reason']}")
    for decision in canary.get("decisions", [])[:5]:
        out.print(
            f"  {decision['created_at']}  {decision['reason']}"
        )  # the reason names the verdict


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Whom the key is for; shown in `keys list`.")],
    role: Annotated[
        str, typer.Option(help="client (ask, rate its answers) | ingest | admin.")
    ] = "client",
    domain: Annotated[
        list[str] | None,
        typer.Option("--domain", help="An ingest key's domain to write into (repeatable)."),
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option(help="Requests a minute; default from the gateway's settings.")
    ] = None,
    gateway: GatewayOption = None,
) -> None:
    """Make an API key. Its secret is printed once: the gateway keeps only its hash."""
    body: dict[str, Any] = {"name": name, "role": role}
    if domain:
        body["domains"] = domain
    if rate_limit is not None:
        body["rate_limit_per_minute"] = rate_limit
    created = _admin_call(gateway, "POST", "/keys", body)
    console.print(
        f"API key {created['id']} ({created['role']}, {created['rate_limit_per_minute']} a "
        "minute) — keep it now, it is not shown again:"
    )
    Console().print(created["key"], soft_wrap=True)


@keys_app.command("list")
def keys_list(gateway: GatewayOption = None) -> None:
    """Every key, revoked ones too (never their secrets)."""
    table = Table("id", "name", "role", "domains", "per minute", "prefix", "created", "revoked")
    for key in _admin_call(gateway, "GET", "/keys"):
        table.add_row(
            key["id"], key["name"], key["role"], ", ".join(key["domains"]) or "-",
            str(key["rate_limit_per_minute"]), key["prefix"], str(key["created_at"]),
            str(key["revoked_at"] or "-"),
        )  # fmt: skip
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (`twinloop keys list`).")],
    gateway: GatewayOption = None,
) -> None:
    """Revoke a key: every gateway refuses it from its next request."""
    revoked = _admin_call(gateway, "DELETE", f"/keys/{key_id}")
    console.print(f"API key {revoked['id']} ({revoked['name']}) revoked at {revoked['revoked_at']}")


@mined_app.command("list")
def mined_list(
    state: Annotated[str | None, typer.Option(help="proposed, agreed, accepted, …")] = None,
    rule: Annotated[str | None, typer.Option(help="retry, regenerate, …")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    gateway: GatewayOption = None,
) -> None:
    """The miner's proposals with their evidence, and how many stand where."""
    query = "&".join(f"{k}={v}" for k, v in (("state", state), ("rule", rule)) if v)
    listed = _admin_call(gateway, "GET", f"/mined?limit={limit}{'&' if query else ''}{query}")
    out = Console()
    counts = ", ".join(
        f"{state} {sum(rules.values())}" for state, rules in sorted(listed["counts"].items())
    )
    out.print(f"mining {'on' if listed['enabled'] else 'off'}; {counts or 'nothing mined yet'}")
    table = Table("id", "rule", "state", "question", "rejected", "chosen", "evidence")
    for item in listed["items"]:
        evidence = ", ".join(
            f"{k} {item[k]:g}" for k in ("similarity", "gap_s") if item[k] is not None
        )
        table.add_row(
            item["id"], item["rule"], item["state"], item["question"], item["rejected_answer"],
            item["chosen_answer"] or "-", evidence or "-",
        )  # fmt: skip
    out.print(table)


@mined_app.command("accept")
def mined_accept(
    item_id: Annotated[str, typer.Argument(help="The proposal's id (`twinloop mined list`).")],
    answer: Annotated[str | None, typer.Option(help="The right answer, if not its own.")] = None,
    reason: Annotated[str, typer.Option(help="Kept in the audit log.")] = "",
    gateway: GatewayOption = None,
) -> None:
    """Make a proposal trainable: a pending example the next cycle cleans."""
    body: dict[str, Any] = {"reason": reason, **({"answer": answer} if answer else {})}
    accepted = _admin_call(gateway, "POST", f"/mined/{item_id}/accept", body)
    console.print(f"mined item {accepted['id']} accepted: example {accepted['example_id']}")


@mined_app.command("reject")
def mined_reject(
    item_id: Annotated[str, typer.Argument(help="The proposal's id (`twinloop mined list`).")],
    reason: Annotated[str, typer.Option(help="Kept with the proposal.")] = "",
    gateway: GatewayOption = None,
) -> None:
    """Never train on a proposal (what it taught is deleted, its adapters tainted)."""
    rejected = _admin_call(gateway, "POST", f"/mined/{item_id}/reject", {"reason": reason})
    console.print(f"mined item {rejected['id']} rejected")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


@engines_app.command("start")
def engines_start(slots: SlotOption = None) -> None:
    """Start the engines one after the other and wait until each serves the model."""
    try:
        _start_engines(EngineProcesses(Settings()), slots or list(Slot))
    except TwinloopError as e:
        raise _fail(e) from e


def _start_engines(
    engines: EngineProcesses, slots: list[Slot], stops: contextlib.ExitStack | None = None
) -> None:
    """Start what is not running; each one this call starts is stopped by `stops` when it
    closes, whether the engine became healthy or not."""
    # One after the other: two engines loading at once on two cores take longer than in turn.
    for slot in slots:
        if engines.record(slot) is not None and engines.is_healthy(slot):
            console.print(f"{slot} engine already running")
            continue
        engines.start(slot)
        if stops is not None:
            stops.callback(_stopping, f"{slot} engine", partial(engines.stop, slot))
        with _spinner() as progress:
            progress.add_task(f"starting {slot} engine (log: {engines.spec(slot).log_path})")
            waited = engines.wait_healthy(slot)
        console.print(
            f"{slot} engine healthy after {waited:.0f} s on port {engines.spec(slot).port}"
        )


def _stopping(name: str, stop: Callable[[], object]) -> None:
    console.print(f"stopping {name}")
    stop()


@engines_app.command("stop")
def engines_stop(slots: SlotOption = None) -> None:
    """Stop exactly the engine processes this data directory started."""
    engines = EngineProcesses(Settings())
    for slot in slots or list(Slot):
        stopped = engines.stop(slot)
        console.print(f"{slot} engine {'stopped' if stopped else 'was not running'}")


@engines_app.command("status")
def engines_status() -> None:
    """Show each slot's engine: PID, port, health, log file."""
    engines = EngineProcesses(Settings())
    table = Table("slot", "pid", "port", "running", "healthy", "log")
    for slot in Slot:
        s = engines.status(slot)
        table.add_row(
            slot, str(s.pid or "-"), str(s.port), str(s.running), str(s.healthy), str(s.log_path)
        )
    Console().print(table)


@app.command("train")
def train() -> None:
    """Run one training cycle now, in this process, and show its progress."""
    settings = Settings()
    configure_logging(settings.log_level)
    try:
        view = asyncio.run(_train_once(settings))
    except TwinloopError as e:
        raise _fail(e) from e
    console.print(
        f"cycle {view.id}: {view.state}"
        + (f" ({view.error})" if view.error else "")
        + (f"; adapters {view.adapters}, snapshot {view.snapshot_id}" if view.adapters else "")
    )
    for entry in view.qa_rounds:
        verdict = "passed" if entry.get("passed") else "rejected"
        console.print(
            f"QA round {entry['round']}: {verdict}, overall {entry.get('overall')} "
            f"(report: GET /qa/{entry['qa_run_id']})"
        )
    if view.state not in (CycleState.STAGED, CycleState.SKIPPED, CycleState.AWAITING_CANARY):
        raise typer.Exit(code=1)


async def _train_once(settings: Settings) -> CycleView:
    from twinloop.trainer.daemon import open_trainer

    async with open_trainer(settings) as trainer:
        cycle = await trainer.cycles.request(trigger="cli", actor="cli", claim=True)
        console.print(f"training cycle {cycle.id}")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            tasks: dict[str, TaskID] = {}

            def on_progress(domain: str, step: int, total: int) -> None:
                if domain not in tasks:
                    tasks[domain] = progress.add_task(f"training {domain}", total=total)
                progress.update(tasks[domain], completed=step)

            return await trainer.runner.run(cycle.id, on_progress)


@app.command("trainer")
def trainer() -> None:
    """Run the trainer: requested (POST /train) and scheduled cycles, until stopped."""
    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(_run_trainer(settings))


async def _run_trainer(settings: Settings) -> None:
    from twinloop.trainer import daemon

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with daemon.open_trainer(settings) as trainer:
        with daemon.serving_metrics(trainer):
            await daemon.serve(trainer, stop)


@app.command("serve")
def serve() -> None:
    """Run only the gateway (engines must be running)."""
    settings = _gateway_settings()
    _serve(settings)


def _serve(settings: Settings) -> None:
    from api.app import create_app

    try:
        load_admin_token(settings)  # the gateway refuses to start without one: say so first
    except TwinloopError as e:
        raise _fail(e) from e
    if settings.gateway.workers > 1:
        _serve_workers(settings)
        return
    _run_http(create_app(settings), settings.gateway.host, settings.gateway.port, settings)


def _serve_workers(settings: Settings) -> None:
    """`gateway.workers` processes on one port (uvicorn's supervisor restarts one that dies).

    Each builds the gateway from the same environment (`api.app:create_app` with no
    argument reads `Settings()`), with its own release watcher, engine connections and
    answer writer; PostgreSQL is what they share (Settings refuses SQLite). Their metrics
    go to a folder that `/metrics` reads whole (`twinloop.metrics`), emptied first: values a
    previous run left there would be summed in.
    """
    import uvicorn

    metrics_dir = settings.data_dir / "prometheus-multiproc"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ[MULTIPROCESS_ENV] = str(metrics_dir)  # read by each worker as it starts
    configure_logging(settings.log_level)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        workers=settings.gateway.workers,
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def _run_http(app: Any, host: str, port: int, settings: Settings) -> None:
    """Serve an ASGI app in the foreground with twinloop's logging, until interrupted."""
    import uvicorn

    configure_logging(settings.log_level)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), access_log=False)


def _start_chroma(chroma: ChromaServer, stops: contextlib.ExitStack) -> None:
    """Start our Chroma server unless it runs already or is external; `stops` stops it."""
    if chroma.record() is not None or chroma.start() is None:
        return
    stops.callback(_stopping, "Chroma", chroma.stop)
    with _spinner() as progress:
        progress.add_task(f"starting Chroma (log: {chroma.log_path})")
        waited = chroma.wait_healthy()
    console.print(f"Chroma healthy after {waited:.0f} s at {chroma.base_url}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _start_trainer(trainer: TrainerProcess, stops: contextlib.ExitStack) -> None:
    """Start our trainer unless it runs already; `stops` stops it, healthy or not."""
    if trainer.record() is not None:
        console.print("trainer already running")
        return
    trainer.start()
    stops.callback(_stopping, "the trainer", trainer.stop)
    try:
        waited = trainer.wait_healthy()
    except NotHealthyError as e:
        raise TwinloopError(
            f"the trainer did not start; last log lines:\n{trainer.log_tail()}"
        ) from e
    console.print(f"trainer running after {waited:.0f} s (log: {trainer.log_path})")


@app.command("up")
def up(
    with_trainer: Annotated[
        bool, typer.Option("--trainer/--no-trainer", help="Also run the Shadow trainer.")
    ] = True,
) -> None:
    """Prepare models, migrate, start Chroma, both engines, the trainer and the gateway.

    Ctrl-C stops everything it started.
    """
    settings = _gateway_settings()
    engines = EngineProcesses(settings)
    chroma = ChromaServer(settings)
    trainer_process = TrainerProcess(settings)
    began = time.monotonic()
    # SIGTERM behaves like Ctrl-C so that `kill` also stops the engines we started.
    signal.signal(signal.SIGTERM, _interrupt)
    # Everything started is stopped on the way out, in reverse order, including a process
    # that never became healthy (it would hold its port and memory for the next `make up`).
    with contextlib.ExitStack() as stops:
        try:
            _announce_admin_token(settings)
            _prepare_models(settings)
            migrate.upgrade(settings.sqlalchemy_url)
            _start_chroma(chroma, stops)
            if not settings.engines.external:
                _start_engines(engines, list(Slot), stops)
            if with_trainer:
                _start_trainer(trainer_process, stops)
            console.print(
                f"ready in {time.monotonic() - began:.0f} s: gateway on "
                f"http://{settings.gateway.host}:{settings.gateway.port}"
            )
            _serve(settings)
        except TwinloopError as e:
            raise _fail(e) from e
        except KeyboardInterrupt:
            pass


@app.command("demo")
def demo(
    fast: Annotated[
        bool,
        typer.Option(
            "--fast", help="Fewer facts, fewer training steps, a shorter canary deadline."
        ),
    ] = False,
    gateway: GatewayOption = None,
    token: Annotated[
        str | None,
        typer.Option(help="Admin token; default TWINLOOP_ADMIN_TOKEN, else var/admin_token."),
    ] = None,
) -> None:
    """The learning loop end to end against the running stack (`make up` first): teach,
    retrieve, train, QA, canary, promotion, and a bad update that never reaches users."""
    from twinloop.demo.client import DemoError, GatewayClient
    from twinloop.demo.driver import demo_context, run_demo
    from twinloop.demo.narrator import Narrator
    from twinloop.demo.plan import DemoPlan

    settings = _gateway_settings()
    try:
        bearer = token or load_admin_token(settings)
    except TwinloopError as e:
        raise _fail(e) from e
    url = gateway or f"http://{settings.gateway.host}:{settings.gateway.port}"
    plan = DemoPlan.fast() if fast else DemoPlan.full()
    with GatewayClient(base_url=url, bearer=bearer) as api:
        try:
            run_demo(demo_context(api, plan, Narrator()), fast=fast)
        except DemoError as e:
            raise typer.Exit(code=e.status_code) from e


def _announce_admin_token(settings: Settings) -> None:
    """Make sure there is an admin token (a random one in the data directory unless set) and
    say where it is; the gateway refuses to start without one."""
    token = ensure_admin_token_file(settings)
    load_admin_token(settings)
    if token.path is None:
        console.print("admin token: TWINLOOP_ADMIN_TOKEN")
    elif token.created:
        console.print(f"admin token: written to {token.path} (mode 0600, a new random token)")
    else:
        console.print(f"admin token: {token.path}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
