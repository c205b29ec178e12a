"""What one proxy has of one resource type, as far as the server can know it.

Per stream and type: what the proxy subscribed to, which response is in flight, what
the proxy acknowledged (name -> resource version), and the last response it rejected.

A reply is matched to a response by its nonce, never by its version: a proxy that
rejects a response (NACK) answers with the nonce of that response, an `error_detail`,
and the version it keeps, which is the old one. Comparing versions would take the
NACK of a new version for a plain request to stay on the old one, and resend the bad
response forever. In the incremental (delta) protocol, replies carry no version at all.

Only one response per type is in flight at a time: the next waits for the proxy's reply.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Sent:
    """A response as the bookkeeping remembers it."""

    nonce: str
    label: str                              # version_info / system_version_info
    updates: Mapping[str, str]              # name -> resource version
    removals: frozenset[str] = frozenset()
    full: bool = False                      # a state-of-the-world wildcard response: replaces everything

    def same_content(self, other: "Sent") -> bool:
        return (self.label, dict(self.updates), self.removals, self.full) == \
               (other.label, dict(other.updates), other.removals, other.full)


@dataclass(frozen=True)
class Nack:
    """A response a proxy rejected, with the proxy's explanation."""

    node: str
    type_url: str
    rejected_version: str
    kept_version: str | None                # what the proxy says it still runs (state of the world only)
    nonce: str
    code: int
    message: str
    at: float = field(default_factory=time.time)

    @property
    def summary(self) -> str:
        return summarize(self.message)

    def to_json(self) -> dict:
        from meshlab.xds.types import short

        return {"node": self.node, "type": short(self.type_url), "type_url": self.type_url,
                "rejected_version": self.rejected_version, "kept_version": self.kept_version,
                "nonce": self.nonce, "code": self.code, "message": self.message, "summary": self.summary,
                "at": self.at}


_PGV_STEP = re.compile(r"(\w+)ValidationError\.(\w+(?:\[[^\]]+\])?)")
# the chain ends at its closing parenthesis: the message's end, or the next rejected resource's name
_PGV_CHAIN = re.compile(r"Proto constraint validation failed \((.*?)\)(?=$|, [^ ]+: )")


def summarize(message: str, limit: int = 300) -> str:
    """Envoy's NACK message in one line: without the dump of the rejected resource it
    often starts with, and a chain of validation errors as one field path:
    `ClusterLoadAssignment.Endpoints[0]...PortValue: value must be less than or equal to 65535`."""
    if "goo.gle/debugproto" in message and "\n: " in message:
        message = message.rsplit("\n: ", 1)[1]
    message = " ".join(message.split())
    # several rejected resources give several chains: the first one says enough
    chain = _PGV_CHAIN.search(message)
    steps = _PGV_STEP.findall(chain.group(1)) if chain else []
    if steps:
        reason = chain.group(1).rsplit(": ", 1)[-1]
        message = f"{steps[0][0]}.{'.'.join(field for _, field in steps)}: {reason}"
    return message if len(message) <= limit else message[: limit - 3] + "..."


class Verdict(enum.Enum):
    REQUEST = "request"         # no nonce: a new subscription (or a reconnect), not a reply
    ACK = "ack"
    NACK = "nack"
    OTHER = "other"             # a nonce already settled or unknown: a subscription change only


class TypeState:
    """The bookkeeping of one resource type on one stream."""

    def __init__(self, type_url: str):
        self.type_url = type_url
        self.subscribed = False           # the proxy asked for this type at least once
        self.wildcard = False
        self.names: set[str] = set()
        self.named = False                # the proxy named resources (or "*") at least once
        self.absent: set[str] = set()     # names it asked for and knows do not exist (delta)
        self.acked: dict[str, str] | None = None   # None: unknown (nothing acknowledged yet)
        self.acked_label: str | None = None
        self.claimed_label: str | None = None      # the version a reconnecting proxy says it has
        self.pending: Sent | None = None
        self.rejected: Sent | None = None
        self.answered = False
        self.acks = 0
        self.nacks = 0
        self.revision = 0   # counts changes, so that what is derived from this state can be cached
        self.subscription = 0   # counts changes of the subscription alone (names, wildcard)

    # -- subscriptions -----------------------------------------------------------

    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def subscribe(self, names: set[str], *, wildcard: bool, replace: bool) -> None:
        """Take the proxy's subscription: the whole set (state of the world, REPLACE)
        or more names (delta). Names it no longer asks for are forgotten."""
        if self.subscribed and wildcard == self.wildcard and (names == self.names if replace else names <= self.names):
            return  # the same subscription again (every state-of-the-world reply repeats it)
        self.revision += 1
        self.subscription += 1
        self.subscribed = True
        self.wildcard = wildcard
        self.names = set(names) if replace else self.names | names
        self._forget_unsubscribed()

    def unsubscribe(self, names: set[str]) -> None:
        if not names & self.names:
            return
        self.revision += 1
        self.subscription += 1
        self.names -= names
        self._forget_unsubscribed()

    def _forget_unsubscribed(self) -> None:
        if self.acked is not None and not self.wildcard:
            self.acked = {n: v for n, v in self.acked.items() if n in self.names}
        if self.absent:
            self.absent &= self.names

    def held(self) -> set[str]:
        """Names the proxy has or is being sent."""
        names = set(self.acked or ())
        if self.pending is not None:
            names |= set(self.pending.updates)
        return names

    # -- responses and replies ---------------------------------------------------

    def sent(self, response: Sent) -> None:
        if self.pending is not None:
            raise RuntimeError(f"a response for {self.type_url} is already in flight ({self.pending.nonce})")
        self.revision += 1
        self.pending = response
        self.answered = True

    def reply(self, nonce: str, error: tuple[int, str] | None) -> Verdict:
        """The proxy's reply carrying NONCE and (for a NACK) ERROR = (code, message)."""
        if not nonce:
            return Verdict.REQUEST
        pending = self.pending
        if pending is None or nonce != pending.nonce:
            return Verdict.OTHER
        self.revision += 1
        self.pending = None
        if error is not None:
            self.rejected = pending
            self.nacks += 1
            return Verdict.NACK
        base = {} if pending.full else dict(self.acked or {})
        base.update(pending.updates)
        for name in pending.removals:
            base.pop(name, None)
        self.acked = base
        if self.absent or pending.removals:  # (most replies concern neither: kept cheap)
            self.absent = (self.absent | pending.removals) - pending.updates.keys()
        self._forget_unsubscribed()
        self.acked_label = pending.label
        self.rejected = None
        self.acks += 1
        return Verdict.ACK

    def rejects(self, response: Sent) -> bool:
        """True when RESPONSE is the one the proxy last rejected (do not send it again)."""
        return self.rejected is not None and self.rejected.same_content(response)

    def adopt(self, label: str | None, versions: Mapping[str, str]) -> None:
        """Take a reconnecting proxy's word that it has LABEL's resources (VERSIONS)."""
        self.revision += 1
        self.acked = dict(versions)
        self.acked_label = label
        self.claimed_label = None

    def to_json(self) -> dict:
        return {
            "subscribed": ["*"] if self.wildcard else sorted(self.names),
            "acked_version": self.acked_label,
            "sent_version": self.pending.label if self.pending else self.acked_label,
            "pending_nonce": self.pending.nonce if self.pending else None,
            "resources": len(self.acked or ()),
            "acks": self.acks,
            "nacks": self.nacks,
        }
