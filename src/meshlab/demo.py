"""Live demos for the decks: run a lab's solution from a notebook cell, and draw what it did.

    with demo.solution(2) as lab:
        result = demo.load(lab.url("envoy"), requests=1154, concurrency=8, count_header="x-served-by")
    demo.bars(result.header_counts, title="who answered")

The lab runs exactly as the checker runs it (the course's solution laid over the starter,
in its own run folder), owned by the notebook's kernel and stopped when the block ends,
even when a cell fails. Nothing here is lab-specific: a deck names its lab and draws.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from meshlab import load as load_engine
from meshlab import workspace
from meshlab.course import load_course
from meshlab.session import LabSession, run_dir_for


class DemoLab:
    """A running lab as a demo cell needs it: URLs of its services, their admin APIs."""

    def __init__(self, session: LabSession):
        self.session = session
        self.lab = session.lab

    def url(self, service: str, path: str = "/", role: str | None = None) -> str:
        """http://127.0.0.1:PORT/PATH of SERVICE (its listener for an Envoy, else its first port)."""
        ports = self.lab.service(service).ports
        port = ports[role] if role else ports.get("listener", next(iter(ports.values())))
        return f"http://127.0.0.1:{port}{path}"

    def stats(self, service: str | None = None) -> dict[str, int]:
        """Envoy's counters and gauges, by name."""
        return self.session.envoy(service).stats()

    def stopped(self, service: str):
        """Stop SERVICE for a `with` block, then bring it back."""
        return self.session.stopped(service)


@contextlib.contextmanager
def solution(number: int) -> Iterator[DemoLab]:
    """Lab NUMBER's solution, running for the block (on the lab's own ports)."""
    course = load_course()
    lab = course.find(str(number))
    lab_dir = workspace.solution_tree(course, lab, course.state_dir / "demos" / lab.slug)
    session = LabSession.open(lab, lab_dir, run_dir_for(course, lab, lab_dir), owned_by="demo")
    try:
        yield DemoLab(session)
    finally:
        session.close()


def load(url: str, **options: object) -> load_engine.LoadResult:
    """`meshlab.load.run(URL, **OPTIONS)` from a notebook cell. A Jupyter kernel runs an
    event loop in its main thread, where the built-in engine's asyncio.run is refused;
    a worker thread has none."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(load_engine.run, url, **options).result()


def bars(counts: dict, *, title: str, ylabel: str = "requests", errors: dict | None = None,
         colors: dict | None = None):
    """A bar chart of COUNTS (label -> number), with ERRORS (label -> (low, high)) as
    interval whiskers; shown inline by the notebook."""
    import matplotlib.pyplot as plt

    labels = [str(label) for label in counts]
    values = list(counts.values())
    figure, axes = plt.subplots(figsize=(7, 3.2))
    axes.bar(labels, values, color=[(colors or {}).get(k, "#4c72b0") for k in counts])
    for x, key in enumerate(counts):
        if errors and key in errors:
            low, high = errors[key]
            axes.errorbar(x, counts[key], yerr=[[counts[key] - low], [high - counts[key]]], color="black", capsize=8)
    for x, value in enumerate(values):
        axes.annotate(str(value), (x, value), ha="center", va="bottom", xytext=(0, 3), textcoords="offset points")
    axes.set_ylim(0, max([*values, *(h for _, h in (errors or {}).values()), 1]) * 1.18)
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return figure
