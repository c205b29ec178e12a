"""Waiting for something that happens soon: one polling loop for checks and tests.

    arrived = eventually(lambda: backend_of("/") == "green", timeout=5.0)
    nack = eventually(last_nack, timeout=2.0)      # the NACK itself, or None

Envoy applies an update, an app journals a request, a process exits: each takes
milliseconds, never an exact amount. A check asks again every INTERVAL until the answer
is truthy or TIMEOUT has passed, and decides from the last answer it got.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def eventually(predicate: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """PREDICATE's first truthy value within TIMEOUT seconds, else its last (falsy) one.
    It is always asked at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
