"""`meshlab audit` grades each lab's starter (must fail) and solution (must pass)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab_runs


def test_audit_reports_each_lab_starter_failing_and_solution_passing(meshlab):
    run = meshlab("audit", "1", "--json", "-j", "2")
    assert run.code == 0, run.output
    (row,) = run.json()
    assert row["lab"] == "01-hello-mesh" and row["ok"] and row["problems"] == []
    assert row["starter"]["status"] == "fail" and row["solution"]["status"] == "pass"
