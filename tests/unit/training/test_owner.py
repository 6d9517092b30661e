"""Which trainer owns a cycle: host, pid and start time, so a restarted container's trainer
(PID 1 again, same hostname) does not take a dead trainer's cycle for its own."""

from __future__ import annotations

import os
import socket

from twinloop.training.cycles import owner_alive, this_trainer


def test_this_trainer_owns_its_cycles() -> None:
    tag = this_trainer()

    assert tag.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert owner_alive(tag)


def test_the_same_pid_started_at_another_time_is_another_trainer() -> None:
    host, pid, started = this_trainer().split(":")

    assert not owner_alive(f"{host}:{pid}:{int(started) - 3600}")


def test_other_hosts_dead_pids_and_nothing_are_not_alive() -> None:
    assert not owner_alive(None) and not owner_alive("")
    assert not owner_alive(f"elsewhere:{os.getpid()}:1")
    assert not owner_alive(f"{socket.gethostname()}:999999999:1")


def test_a_tag_from_before_start_times_is_judged_by_its_pid() -> None:
    assert owner_alive(f"{socket.gethostname()}:{os.getpid()}")
