"""What a failed check says: a one-line summary, EXPECTED, RECEIVED and a hint."""

from __future__ import annotations


class CheckFailed(AssertionError):
    """A check's verdict, phrased for the learner. Raised by the helpers in
    `meshlab.grading`; the scorecard shows each part in its own place."""

    def __init__(self, summary: str, *, expected: str | None = None, received: str | None = None,
                 hint: str | None = None):
        super().__init__(summary)
        self.summary = summary
        self.expected = expected
        self.received = received
        self.hint = hint

    def __str__(self) -> str:
        lines = [self.summary]
        if self.expected is not None:
            lines.append(f"EXPECTED: {self.expected}")
        if self.received is not None:
            lines.append(f"RECEIVED: {self.received}")
        if self.hint:
            lines.append(f"HINT: {self.hint}")
        return "\n".join(lines)


def fail(summary: str, *, expected: str | None = None, received: str | None = None,
         hint: str | None = None) -> None:
    raise CheckFailed(summary, expected=expected, received=received, hint=hint)
