"""The course tests itself: every lab's starter must fail its checks and every
solution must pass them, on this machine, against real Envoy.

Starters are graded as committed (never the learner's edits), and the audit says which
commit it read and warns about starters changed since; an instructor adapting a lab
grades the working tree instead (`working_tree=True`). Solutions are always graded as
they are in the working tree. With network isolation each run gets its own namespace,
so the fixed ports of the labs never collide and runs can go in parallel.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from meshlab import platform, workspace
from meshlab.checking import LabResult, run_checks
from meshlab.course import Course, Lab


@dataclass
class AuditRow:
    lab: Lab
    starter: LabResult
    solution: LabResult
    graded: str = "working tree"                          # or "commit 1a2b3c4"
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None    # why this machine cannot run the lab (neither passed nor failed)

    @property
    def problems(self) -> list[str]:
        if self.skipped:
            return []
        found = []
        if self.starter.status == "pass":
            found.append("the starter passes every check: the checks cannot tell unsolved from solved")
        elif self.starter.status == "error":
            found.append(f"the starter could not be graded: {(self.starter.error or {}).get('message')}")
        if self.solution.status == "fail":
            failing = [f"{c.title} ({c.message})" if c.message else c.title
                       for c in self.solution.checks if c.status != "pass"]
            found.append("the solution fails: " + "; ".join(failing))
        elif self.solution.status == "error":
            found.append(f"the solution could not be graded: {(self.solution.error or {}).get('message')}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"lab": self.lab.slug, "ok": self.ok, "skipped": self.skipped, "problems": self.problems,
                "graded": self.graded,
                "warnings": self.warnings, "starter": self.starter.to_json(), "solution": self.solution.to_json()}


def what_is_graded(course: Course, lab: Lab, *, working_tree: bool) -> tuple[str, list[str]]:
    """Where LAB's starter comes from ("commit 1a2b3c4" or "working tree"), and warnings
    about files that differ from what is graded or what is committed."""
    revision = None if working_tree else workspace.committed_revision(course)
    changed = workspace.uncommitted(course, lab.workspace)
    warnings = []
    if revision and changed:
        warnings.append(f"the starter has uncommitted changes ({', '.join(changed)}); the audit grades commit "
                        f"{revision}: commit them, or audit with --working-tree to grade the files as they are")
    solution_changes = workspace.uncommitted(course, lab.solution)
    if solution_changes:
        warnings.append(f"the solution is graded with uncommitted changes ({', '.join(solution_changes)})")
    return (f"commit {revision}" if revision else "working tree"), warnings


def audit(course: Course, labs: list[Lab], *, jobs: int = 1, isolate: bool = False, working_tree: bool = False,
          on_done: Callable[[Lab, str, LabResult], None] | None = None) -> list[AuditRow]:
    """Grade starter and solution of each lab in LABS; JOBS runs at once (with ISOLATE
    only: without it, labs share fixed ports and must run one at a time). Starters come
    from the last commit unless WORKING_TREE. A lab whose `requires` this machine does
    not meet is skipped, with the reason."""
    graded = course.state_dir / "graded"
    skipped = {}
    for lab in labs:
        problem = platform.unmet(lab.requires, lab_ref=f"lab {lab.number:02d}")
        if problem is not None:
            skipped[lab.slug] = f"{problem.message} (fix: {problem.fix})"
    trees = {}
    for lab in labs:
        if lab.slug in skipped:
            continue
        starter = workspace.pristine_starter(course, lab, graded / f"{lab.slug}-starter", working_tree=working_tree)
        solution = workspace.solution_tree(course, lab, graded / f"{lab.slug}-solution", starter=starter)
        trees[lab.slug] = {"starter": starter, "solution": solution}

    def grade(lab: Lab, which: str) -> LabResult:
        if lab.slug in skipped:
            result = LabResult(lab=lab.slug, number=lab.number, title=lab.title, path="", status="skip",
                               error={"kind": "environment", "message": skipped[lab.slug]})
        else:
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
    return [AuditRow(lab, by_task[(lab.slug, "starter")], by_task[(lab.slug, "solution")],
                     *what_is_graded(course, lab, working_tree=working_tree), skipped=skipped.get(lab.slug))
            for lab in labs]
