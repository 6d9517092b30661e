"""`twinloop trainer` that stops dead at one point of a training cycle, for kill -9 tests.

    python -m twinloop.testing.paused_trainer collecting|cleaning MARKER

runs the real trainer process (`twinloop.cli`'s, configured by `TWINLOOP_*` as usual) with
one thing changed: when a cycle reaches the named point the process writes the cycle's
state to the file MARKER and waits there forever, so that a test can SIGKILL it at that
point. Only the points a trainer passes in an instant need it:

* `collecting`: a cycle claimed (or resumed), before its first step ran;
* `cleaning`: inside the cleaning step, its transaction open and nothing of it committed.

Training is long enough to be killed at any step, and staging and QA wait on the engines
when the stub engines hold the request (`twinloop.testing.stub_engine`), so those states
are killed in the plain `twinloop trainer`.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twinloop import cli
from twinloop.logging import configure_logging
from twinloop.settings import Settings
from twinloop.states import CycleState
from twinloop.training import runner
from twinloop.training.steps import collect
from twinloop.training.steps.context import CycleContext, Ending

POINTS = ("collecting", "cleaning")


def pause_at(point: str, marker: Path) -> None:
    """Make this process's trainer stop at `point` (one of POINTS), announcing it in `marker`."""
    if point == "collecting":
        step = runner.STEPS[CycleState.COLLECTING]

        async def before_collecting(
            ctx: CycleContext, cycle_id: str, on_progress: Any
        ) -> Ending | None:
            await asyncio.to_thread(marker.write_text, CycleState.COLLECTING)
            await asyncio.Event().wait()
            return await step(ctx, cycle_id, on_progress)  # never reached

        runner.STEPS[CycleState.COLLECTING] = before_collecting
    elif point == "cleaning":
        # The name the cleaning step calls (imported into its module), replaced there.
        clean = vars(collect)["clean"]

        def cleaning(*args: Any, **kwargs: Any) -> Any:
            # Runs in a worker thread while the step's transaction is open.
            marker.write_text(CycleState.CLEANING)
            threading.Event().wait()
            return clean(*args, **kwargs)  # never reached

        vars(collect)["clean"] = cleaning
    else:
        raise ValueError(f"no pause point {point!r}; known: {', '.join(POINTS)}")


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - a process tests start
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("point", choices=POINTS)
    parser.add_argument("marker", type=Path)
    args = parser.parse_args(argv)
    pause_at(args.point, args.marker)
    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(cli._run_trainer(settings))


if __name__ == "__main__":  # pragma: no cover
    main()
