"""Lab 11's chaos checks (step 6, faults.py; the last checks of checker/test_11_mini_mesh.py)
graded for real on the whole mesh through `meshlab check`: the starter's faults.py (nothing
translated), a share in the wrong unit and a control plane that remembers an experiment
after it ended each fail exactly the checks they should; an unusual correct translation
passes. tests/test_course_proves_itself.py grades the starter and the solution."""

from __future__ import annotations

from pathlib import Path

import pytest
from lab_variants import fails_only, passes
from test_course_proves_itself import checker_ids

pytestmark = pytest.mark.lab_runs

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = (ROOT / "solutions" / "11-mini-mesh" / "faults.py").read_text()
STARTER = (ROOT / "labs" / "11-mini-mesh" / "faults.py").read_text()
CHAOS = {"test_abort_share", "test_delay", "test_expiry_and_clear"}


def replaced(old: str, new: str) -> dict[str, str]:
    assert SOLUTION.count(old) == 1, old
    return {"faults.py": SOLUTION.replace(old, new)}


def test_the_chaos_checks_are_in_the_labs_one_checker(course):
    """`meshlab check 11` and the audit run course.py's checker module and nothing else."""
    assert CHAOS <= checker_ids(course.find(11))


def test_the_starters_faults_fail_every_chaos_check_and_only_those(grade):
    checks = fails_only(grade, 11, {"faults.py": STARTER}, CHAOS)
    assert "changed nothing" in checks["test_expiry_and_clear"]["message"]


def test_a_share_in_the_wrong_unit_fails_only_the_abort_share(grade):
    # The abort's 10 taken for a fraction and scaled down once more: 0.1 %, not 10 %.
    checks = fails_only(grade, 11, replaced("percentage=_share(fault.abort_percent)",
                                            "percentage=_share(fault.abort_percent / 100)"),
                        {"test_abort_share"})
    assert "not about 10 %" in checks["test_abort_share"]["message"]


def test_a_delay_in_the_wrong_unit_fails_only_the_delay_check(grade):
    # The milliseconds' remainder taken as microseconds: 0.5 ms of delay, not 0.5 s. Envoy
    # keeps a fault's delay in whole milliseconds, and injects none of 0 ms.
    checks = fails_only(grade, 11, replaced("nanos=fault.delay_ms % 1000 * 1_000_000",
                                            "nanos=fault.delay_ms % 1000 * 1_000"),
                        {"test_delay"})
    assert checks["test_delay"]["received"].startswith("it grew by 0"), checks["test_delay"]


def test_an_experiment_remembered_after_it_ended_fails_only_the_clear_check(grade):
    remembered = replaced(
        '    running = [fault for fault in node.faults if fault.service == service]\n',
        '    running = [fault for fault in node.faults if fault.service == service]\n'
        '    if running:\n'
        '        _seen[service] = running\n'
        '    running = _seen.get(service, [])\n')
    remembered["faults.py"] += "\n\n_seen: dict = {}\n"
    checks = fails_only(grade, 11, remembered, {"test_expiry_and_clear"})
    assert "did not get their configuration back after its --for" in checks["test_expiry_and_clear"]["message"]


def test_shares_per_hundred_pass_too(grade):
    """An unusual correct translation: whole percentages as so many per HUNDRED (Envoy's
    default denominator) instead of per million."""
    passes(grade, 11, replaced(
        "    return percent_pb2.FractionalPercent(numerator=round(percent * 10_000),\n",
        "    if percent == int(percent):\n"
        "        return percent_pb2.FractionalPercent(numerator=int(percent))\n"
        "    return percent_pb2.FractionalPercent(numerator=round(percent * 10_000),\n"))
