"""Reading Envoy's JSON access log: complete lines only, from a mark, with flags."""

from __future__ import annotations

import json
import threading
import time

import pytest

from meshlab.grading import CheckFailed
from meshlab.grading.accesslog import (
    AccessLog, count_flags, describe_flags, duration_s, flags, require_fields, with_flag,
)


def line(**fields) -> str:
    return json.dumps({"path": "/x", "response_code": 200, "response_flags": "-", "duration": 3, **fields}) + "\n"


def test_entries_since_a_mark_skip_noise_and_unfinished_lines(tmp_path):
    log = AccessLog(tmp_path / "envoy.access.log")
    assert log.position() == 0 and log.since(0) == []
    log.path.write_text(line(path="/old"))
    mark = log.position()
    with open(log.path, "a") as handle:
        handle.write("[warning] not json at all\n")
        handle.write(line(response_code=503, response_flags="UO", duration=0))
        handle.write(line(response_code=503, response_flags="DI,FI", duration=2001))
        handle.write('{"path": "/half-written"')
    entries = log.since(mark)
    assert [e["response_code"] for e in entries] == [503, 503]
    assert flags(entries[1]) == {"DI", "FI"} and flags({"response_flags": "-"}) == set()
    assert count_flags(entries) == {"UO": 1, "DI": 1, "FI": 1}
    assert len(with_flag(entries, "FI")) == 1 and duration_s(entries[1]) == pytest.approx(2.001)
    assert describe_flags(count_flags(entries)) == "DI x 1, FI x 1, UO x 1"
    assert describe_flags(count_flags([])) == "no response flags"


def test_wait_returns_once_envoy_has_flushed_enough(tmp_path):
    log = AccessLog(tmp_path / "envoy.access.log")
    log.path.write_text("")

    def flush_later() -> None:
        time.sleep(0.2)
        with open(log.path, "a") as handle:
            handle.write(line(path="/slow") + line(path="/other") + line(path="/slow"))
    threading.Thread(target=flush_later).start()
    entries = log.wait(0, 2, where=lambda e: e["path"] == "/slow", timeout=5)
    assert [e["path"] for e in entries] == ["/slow", "/slow"]


def test_wait_fails_the_check_when_entries_do_not_come(tmp_path):
    log = AccessLog(tmp_path / "envoy.access.log")
    with pytest.raises(CheckFailed) as failure:
        log.wait(0, 3, timeout=0.1)
    assert "0 matching entries" in failure.value.summary and "access_log" in failure.value.hint


def test_require_fields_names_what_is_missing():
    require_fields([json.loads(line())])
    with pytest.raises(CheckFailed) as failure:
        require_fields([{"path": "/x", "response_code": 200}])
    assert "response_flags, duration" in failure.value.received
