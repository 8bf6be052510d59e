"""What the thread- and process-pool runners share: the first finished trial among those running."""

from __future__ import annotations

import concurrent.futures as futures

from workers.trial import TrialResult


def first_done(running: set[futures.Future[TrialResult]], timeout_s: float) -> TrialResult | None:
    """The result of one finished future (removed from `running`), or None after `timeout_s`."""
    done, _ = futures.wait(running, timeout=timeout_s, return_when=futures.FIRST_COMPLETED)
    if not done:
        return None
    future = done.pop()
    running.discard(future)
    return future.result()
