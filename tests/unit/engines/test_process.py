from __future__ import annotations

import json
import subprocess
import time

import psutil
import pytest

from twinloop.engines.process import EngineProcesses
from twinloop.errors import EngineProcessError
from twinloop.settings import Settings, Slot


def test_engine_command_binds_loopback_and_enables_runtime_lora(settings: Settings) -> None:
    spec = EngineProcesses(settings).spec(Slot.GREEN)
    command = spec.command()

    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == str(settings.engines.green_port)
    assert "--enable-lora" in command
    env = spec.environment()
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert spec.log_path == settings.data_dir / "engines" / "green.log"


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def _write_record(engines: EngineProcesses, pid: int, create_time: float) -> None:
    path = engines.spec(Slot.BLUE).pid_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"pid": pid, "create_time": create_time, "port": 1, "started_at": 0})
    )


def test_stop_ends_exactly_the_recorded_process_group(settings: Settings) -> None:
    engines = EngineProcesses(settings)
    process = _sleeper()
    _write_record(engines, process.pid, psutil.Process(process.pid).create_time())

    record = engines.record(Slot.BLUE)
    assert record is not None and record.pid == process.pid
    assert engines.stop(Slot.BLUE, timeout_s=5) is True

    # stop() waits through psutil, which reaps our child, so Popen gets no exit
    # status back; the check is that this wait does not raise TimeoutExpired.
    process.wait(timeout=5)
    assert not engines.spec(Slot.BLUE).pid_path.exists()


def test_a_reused_pid_is_not_ours_and_is_never_signalled(settings: Settings) -> None:
    engines = EngineProcesses(settings)
    process = _sleeper()
    try:
        # Same PID, different start time: the PID file is stale.
        _write_record(engines, process.pid, psutil.Process(process.pid).create_time() - 1000)

        assert engines.record(Slot.BLUE) is None
        assert engines.stop(Slot.BLUE) is False
        time.sleep(0.1)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_start_refuses_a_port_someone_else_holds(settings: Settings) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = settings.model_copy(
            update={
                "engines": settings.engines.model_copy(update={"blue_port": sock.getsockname()[1]})
            }
        )
        with pytest.raises(EngineProcessError, match="taken by a process"):
            EngineProcesses(busy).start(Slot.BLUE)


def test_start_refuses_a_missing_model_folder(settings: Settings) -> None:
    with pytest.raises(EngineProcessError, match="models prepare"):
        EngineProcesses(settings).start(Slot.BLUE)
