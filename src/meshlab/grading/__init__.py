"""Assertions for checks that read like prose, and the check marker.

    @check("The app's greeting arrives through Envoy on :10000", hint="...")
    def test_greeting(lab):
        response = lab.get("http://127.0.0.1:10000/")
        responds_with_status(response, 200)

Every helper raises CheckFailed with EXPECTED and RECEIVED filled in; the scorecard
shows them with the check's hint.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import pytest

from meshlab.grading.failures import CheckFailed, fail
from meshlab.grading.http import (
    describe,
    lacks_header,
    responds_with_body,
    responds_with_header,
    responds_with_status,
)
from meshlab.grading.polling import eventually

F = TypeVar("F", bound=Callable)


def check(title: str, *, hint: str | None = None) -> Callable[[F], F]:
    """Mark a test as a graded check with the TITLE the scorecard shows and the HINT
    given when it fails (a CheckFailed may carry a more specific hint)."""
    return pytest.mark.meshlab_check(title=title, hint=hint)


__all__ = [
    "CheckFailed", "check", "describe", "eventually", "fail", "lacks_header", "responds_with_body",
    "responds_with_header", "responds_with_status",
]
