"""meshlab audit pairs each lab's starter and solution results (without grading here:
run_checks is replaced by a stand-in that answers by folder)."""

from __future__ import annotations

from meshlab import audit as audit_module
from meshlab.checking import LabResult


def test_audit_pairs_starter_and_solution_per_lab(course, monkeypatch, tmp_path):
    monkeypatch.setattr(type(course), "state_dir", property(lambda self: tmp_path))

    def fake_run_checks(course_, lab, lab_dir, *, isolate=False, **_):
        status = "fail" if lab_dir.name.endswith("-starter") else "pass"
        return LabResult(lab=lab.slug, number=lab.number, title=lab.title, path=str(lab_dir), status=status)

    monkeypatch.setattr(audit_module, "run_checks", fake_run_checks)
    rows = audit_module.audit(course, list(course.labs), jobs=2, isolate=True)
    assert [row.lab.slug for row in rows] == [lab.slug for lab in course.labs]
    assert all(row.ok and row.starter.status == "fail" and row.solution.status == "pass" for row in rows)
