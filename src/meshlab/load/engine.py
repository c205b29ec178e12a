"""The built-in load engine: asyncio, with fortio's two modes.

- N requests as fast as C concurrent connections allow (`fortio load -n N -c C -qps 0`);
- a fixed rate for a duration or a number of requests (`-qps Q -t 5s`, `-qps Q -n N`):
  request i is due at start + i/Q (catching up when behind, as fortio does by default).

Each of the C workers owns one keep-alive connection (`meshlab.load.http1`), so
"threads" means connections, as in fortio. A request that gets no HTTP response
(refused, reset, timed out) counts under status -1, its exception's name in
`error_kinds`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from meshlab.load.http1 import Connection, Http1ProtocolError, Target
from meshlab.load.results import NO_RESPONSE, Histogram, LoadResult, now_rfc3339

# on_progress(done, expected total or None, seconds elapsed)
OnProgress = Callable[[int, int | None, float], None]
_TICK_S = 0.1


@dataclass(frozen=True)
class Plan:
    """What to send: REQUESTS requests or DURATION seconds, over CONCURRENCY
    connections, at QPS requests per second (0: as fast as possible)."""

    url: str
    requests: int | None = None
    duration: float | None = None
    concurrency: int = 8
    qps: float = 0.0
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    insecure: bool = False
    count_header: str | None = None   # tally responses by this header's value

    def __post_init__(self) -> None:
        if (self.requests is None) == (self.duration is None):
            raise ValueError("give exactly one of a number of requests (-n) and a duration (-t)")
        if self.requests is not None and self.requests < 1:
            raise ValueError("the number of requests must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("the duration must be positive")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.qps < 0:
            raise ValueError("qps must be 0 (as fast as possible) or more")
        Target.parse(self.url)

    @property
    def expected(self) -> int | None:
        if self.requests is not None:
            return self.requests
        return int(self.duration * self.qps) if self.qps else None

    @property
    def described(self) -> str:
        return f"exactly {self.requests} calls" if self.requests is not None else f"{self.duration:g}s"


class _Tally:
    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()
        self.durations: list[float] = []
        self.error_durations: list[float] = []
        self.headers: dict[int, dict[str, str]] = {}
        self.error_kinds: Counter[str] = Counter()
        self.header_values: Counter[str] = Counter()

    @property
    def done(self) -> int:
        return len(self.durations)

    def record(self, code: int, elapsed: float, headers: dict[str, str] | None = None,
               error: str | None = None) -> None:
        self.codes[code] += 1
        self.durations.append(elapsed)
        if not 200 <= code < 300:
            self.error_durations.append(elapsed)
        if headers is not None and code not in self.headers:
            self.headers[code] = headers
        if error:
            self.error_kinds[error] += 1


async def _run(plan: Plan, on_progress: OnProgress | None) -> LoadResult:
    tally = _Tally()
    counted = plan.count_header.lower() if plan.count_header else None
    target = Target.parse(plan.url)
    started, start_time = time.monotonic(), now_rfc3339()
    stop_at = started + plan.duration if plan.duration is not None else None
    issued = 0

    def next_slot() -> float | None:
        """When the next request is due, or None when the plan is done."""
        nonlocal issued
        if plan.requests is not None and issued >= plan.requests:
            return None
        due = started + issued / plan.qps if plan.qps else time.monotonic()
        if stop_at is not None and max(due, time.monotonic()) >= stop_at:
            return None
        issued += 1
        return due

    async def worker() -> None:
        connection = Connection(target, insecure=plan.insecure)
        request = connection.request_bytes(plan.method, dict(plan.headers))
        head = plan.method.upper() == "HEAD"
        try:
            while (due := next_slot()) is not None:
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(plan.timeout):
                        response = await connection.send(request, head=head)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                        ValueError, Http1ProtocolError) as exc:
                    tally.record(NO_RESPONSE, time.monotonic() - sent, error=type(exc).__name__)
                else:
                    tally.record(response.status, time.monotonic() - sent, response.headers)
                    if counted:
                        tally.header_values[response.headers.get(counted, "")] += 1
        finally:
            connection.close()

    async def report() -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            on_progress(tally.done, plan.expected, time.monotonic() - started)

    reporter = asyncio.create_task(report()) if on_progress else None
    try:
        await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    finally:
        if reporter:
            reporter.cancel()
    elapsed = time.monotonic() - started
    if on_progress:
        on_progress(tally.done, tally.done, elapsed)
    return LoadResult(
        url=plan.url, engine="builtin", ret_codes=dict(sorted(tally.codes.items())),
        durations=Histogram.of(tally.durations), error_durations=Histogram.of(tally.error_durations),
        actual_qps=tally.done / elapsed if elapsed > 0 else 0.0, actual_duration=round(elapsed, 9),
        requested_qps=plan.qps, requested=plan.described, num_threads=plan.concurrency,
        sample_headers=tally.headers, error_kinds=dict(tally.error_kinds), start_time=start_time,
        version="meshlab", header_counts=dict(tally.header_values.most_common()),
    )


def run(plan: Plan, *, on_progress: OnProgress | None = None) -> LoadResult:
    """Carry out PLAN and return what it measured (blocks; runs its own event loop)."""
    return asyncio.run(_run(plan, on_progress))
