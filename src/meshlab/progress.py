"""The learner's progress, kept in `.meshlab/progress.json`: which labs passed, when,
and how many hints were shown (so `meshlab hint` gives the next layer each time)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from meshlab.course import Course, Lab


def _file(course: Course) -> Path:
    return course.state_dir / "progress.json"


def load(course: Course) -> dict[str, dict]:
    try:
        return json.loads(_file(course).read_text()).get("labs", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save(course: Course, labs: dict[str, dict]) -> None:
    path = _file(course)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"labs": labs}, indent=2, sort_keys=True))
    temporary.replace(path)


def of(course: Course, lab: Lab) -> dict:
    return load(course).get(lab.slug, {})


def record_check(course: Course, lab: Lab, status: str, passed: int, total: int) -> None:
    labs = load(course)
    entry = labs.setdefault(lab.slug, {})
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    entry.update(last_status=status, last_checked=now, last_score=f"{passed}/{total}")
    if status == "pass" and not entry.get("passed"):
        entry.update(passed=True, passed_at=now)
    _save(course, labs)


def next_hint(course: Course, lab: Lab) -> tuple[int, list[str]]:
    """Reveal one more hint layer: (how many are shown now, the hints shown so far)."""
    labs = load(course)
    entry = labs.setdefault(lab.slug, {})
    shown = min(int(entry.get("hints_shown", 0)) + 1, len(lab.hints))
    entry["hints_shown"] = shown
    _save(course, labs)
    return shown, list(lab.hints[:shown])


def reset_hints(course: Course, lab: Lab) -> None:
    labs = load(course)
    labs.setdefault(lab.slug, {})["hints_shown"] = 0
    _save(course, labs)
