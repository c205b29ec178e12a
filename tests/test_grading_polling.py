"""`eventually`, the one polling loop of checks and tests."""

from __future__ import annotations

import time

from meshlab.grading import eventually


def test_returns_the_first_truthy_value_as_soon_as_it_comes():
    answers = iter([None, 0, "", "ready", "later"])
    started = time.monotonic()
    assert eventually(lambda: next(answers), timeout=5, interval=0.001) == "ready"
    assert time.monotonic() - started < 1


def test_returns_the_last_falsy_value_at_the_deadline():
    calls = []
    started = time.monotonic()
    assert eventually(lambda: calls.append(1) or len(calls) * 0, timeout=0.1, interval=0.01) == 0
    took = time.monotonic() - started
    assert 0.1 <= took < 1 and len(calls) >= 3


def test_asks_at_least_once_even_without_time():
    assert eventually(lambda: {"nack": "port 80820"}, timeout=0) == {"nack": "port 80820"}
    assert eventually(lambda: None, timeout=0) is None
