"""The scorecard as printed: what a learner reads must arrive whole."""

from __future__ import annotations

from meshlab import ui
from meshlab.checking import CheckResult, LabResult

LUA_ERROR = ("[2026-12-01 10:00:00.000][12][error][lua] [source/extensions/filters/http/lua/lua_filter.cc:1000] "
             "script log: [string \"-- Lab 05 — the bucketing filter....\"]:20: attempt to get length of local "
             "'text' (a nil value)")


def test_the_log_tail_shows_whole_lines(monkeypatch):
    result = LabResult(lab="05-lua", number=5, title="Lua", path=".", status="fail", checks=[
        CheckResult(id="t", title="No Lua errors", status="fail", message="lua.errors: 3",
                    logs={"envoy": "--- meshlab: starting envoy\n" + LUA_ERROR + "\n"})])
    monkeypatch.setattr(ui, "console", ui.Console(width=100, record=True, highlight=False))
    ui.show_result(result)
    printed = " ".join(ui.console.export_text().split())
    assert "attempt to get length of local 'text' (a nil value)" in printed, printed
