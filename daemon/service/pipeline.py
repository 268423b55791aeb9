"""The functional core's runner: an ordered tuple of stages, each `stage(work, ctx) -> work`.

A stage that finds a technical problem adds it to `work.problems`, and the loop stops
after that stage (later stages cannot make sense of a message an earlier one rejected).
The answer is then built from whatever the stages learnt, so a rejected message is
answered as precisely as an accepted one. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.domain import Problem
from daemon.records import Context, Work

Stage = Callable[[Work, Context], Work]
Around = Callable[[str, Callable[[], Work]], Work]


def _plain(_name: str, call: Callable[[], Work]) -> Work:
    return call()


OnError = Callable[[str, Exception], Problem]


def run(
    stages: tuple[Stage, ...],
    work: Work,
    ctx: Context,
    around: Around = _plain,
    on_error: OnError | None = None,
) -> Work:
    """Run `stages` in order until one reports a problem or finds the message already
    answered. `around` wraps each stage from outside (timing, metrics) without the
    stages knowing. A stage that raises is a bug: with `on_error` the message keeps
    what the earlier stages learnt (so it can still be answered) plus that problem."""
    for stage in stages:
        try:
            work = around(stage.__name__, lambda stage=stage, work=work: stage(work, ctx))
        except Exception as exc:
            if on_error is None:
                raise
            return work.failed(on_error(stage.__name__, exc))
        if work.problems or work.retransmission_of:
            break
    return work
