"""The course tests itself: every lab's starter must fail its checks and every
solution must pass them, on this machine, against real Envoy.

Starters are graded as committed (never the learner's edits). With network isolation
each run gets its own namespace, so the fixed ports of the labs never collide and runs
can go in parallel.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from meshlab import workspace
from meshlab.checking import LabResult, run_checks
from meshlab.course import Course, Lab


@dataclass
class AuditRow:
    lab: Lab
    starter: LabResult
    solution: LabResult

    @property
    def problems(self) -> list[str]:
        found = []
        if self.starter.status == "pass":
            found.append("the starter passes every check: the checks cannot tell unsolved from solved")
        elif self.starter.status == "error":
            found.append(f"the starter could not be graded: {(self.starter.error or {}).get('message')}")
        if self.solution.status == "fail":
            failing = [c.title for c in self.solution.checks if c.status != "pass"]
            found.append("the solution fails: " + "; ".join(failing))
        elif self.solution.status == "error":
            found.append(f"the solution could not be graded: {(self.solution.error or {}).get('message')}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


def audit(course: Course, labs: list[Lab], *, jobs: int = 1, isolate: bool = False,
          on_done: Callable[[Lab, str, LabResult], None] | None = None) -> list[AuditRow]:
    """Grade starter and solution of each lab in LABS; JOBS runs at once (with ISOLATE
    only: without it, labs share fixed ports and must run one at a time)."""
    graded = course.state_dir / "graded"
    trees = {}
    for lab in labs:
        starter = workspace.pristine_starter(course, lab, graded / f"{lab.slug}-starter")
        solution = workspace.solution_tree(course, lab, graded / f"{lab.slug}-solution", starter=starter)
        trees[lab.slug] = {"starter": starter, "solution": solution}

    def grade(lab: Lab, which: str) -> LabResult:
        result = run_checks(course, lab, trees[lab.slug][which], isolate=isolate)
        if on_done:
            on_done(lab, which, result)
        return result

    tasks = [(lab, which) for lab in labs for which in ("starter", "solution")]
    workers = max(1, jobs if isolate else 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda task: grade(*task), tasks))
    # Keyed by slug: a Lab holds dicts (ports, env), so it cannot be a dict key itself.
    by_task = {(lab.slug, which): result for (lab, which), result in zip(tasks, results)}
    return [AuditRow(lab, by_task[(lab.slug, "starter")], by_task[(lab.slug, "solution")]) for lab in labs]
