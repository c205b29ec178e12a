"""Lab 11's chaos checks (checker/test_11_mini_mesh_chaos.py) graded for real on the
whole mesh: the solution passes them; the starter's faults.py (nothing translated), a
share in the wrong unit, a fault on the listener instead of the routes, and a control
plane that remembers an experiment after it ended each fail the checks they should."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from meshlab import checking

pytestmark = pytest.mark.lab_runs

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ROOT / "checker" / "test_11_mini_mesh_chaos.py"
SOLUTION = (ROOT / "solutions" / "11-mini-mesh" / "faults.py").read_text()
STARTER = (ROOT / "labs" / "11-mini-mesh" / "faults.py").read_text()
ALL = {"test_abort_share", "test_delay", "test_expiry_and_clear"}


@pytest.fixture
def grade_chaos(course, lab_copy):
    from conftest import CAN_ISOLATE

    def run(faults: str) -> dict[str, dict]:
        folder = lab_copy(11, files={"faults.py": faults})
        lab = dataclasses.replace(course.find(11), checks=CHECKS)
        result = checking.run_checks(course, lab, folder, isolate=CAN_ISOLATE)
        assert result.status in ("pass", "fail"), result.error
        return {c.id: dataclasses.asdict(c) for c in result.checks}

    return run


def failing(checks: dict[str, dict]) -> set[str]:
    for check in checks.values():
        if check["status"] != "pass":
            assert check["status"] == "fail" and check["expected"] and check["received"] and check["hint"], check
    return {cid for cid, c in checks.items() if c["status"] != "pass"}


def replaced(old: str, new: str) -> str:
    assert SOLUTION.count(old) == 1, old
    return SOLUTION.replace(old, new)


def test_the_solution_passes(grade_chaos):
    checks = grade_chaos(SOLUTION)
    assert set(checks) == ALL and not failing(checks), checks


def test_the_starter_fails_every_chaos_check(grade_chaos):
    checks = grade_chaos(STARTER)
    assert failing(checks) == ALL
    assert "changed nothing" in checks["test_expiry_and_clear"]["message"]


def test_a_share_in_the_wrong_unit_fails_only_the_abort_share(grade_chaos):
    # The abort's 10 taken for a fraction and scaled down once more: 0.1 %, not 10 %.
    checks = grade_chaos(replaced("percentage=_share(fault.abort_percent)",
                                  "percentage=_share(fault.abort_percent / 100)"))
    assert failing(checks) == {"test_abort_share"}
    assert "not about 10 %" in checks["test_abort_share"]["message"]


def test_an_experiment_remembered_after_it_ended_fails_only_the_clear_check(grade_chaos):
    remembered = replaced(
        '    running = [fault for fault in node.faults if fault.service == service]\n',
        '    running = [fault for fault in node.faults if fault.service == service]\n'
        '    if running:\n'
        '        _seen[service] = running\n'
        '    running = _seen.get(service, [])\n') + "\n\n_seen: dict = {}\n"
    checks = grade_chaos(remembered)
    assert failing(checks) == {"test_expiry_and_clear"}
    assert "did not get their configuration back after its --for" in checks["test_expiry_and_clear"]["message"]


def test_shares_per_hundred_pass_too(grade_chaos):
    """An unusual correct translation: whole percentages as so many per HUNDRED (Envoy's
    default denominator) instead of per million."""
    per_hundred = replaced(
        "    return percent_pb2.FractionalPercent(numerator=round(percent * 10_000),\n",
        "    if percent == int(percent):\n"
        "        return percent_pb2.FractionalPercent(numerator=int(percent))\n"
        "    return percent_pb2.FractionalPercent(numerator=round(percent * 10_000),\n")
    checks = grade_chaos(per_hundred)
    assert not failing(checks), checks
