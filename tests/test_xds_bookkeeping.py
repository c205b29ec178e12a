"""ACK and NACK bookkeeping, against a model: replies are matched to responses by
nonce, a NACK never changes what the proxy is known to run, and a rejected response is
not sent again."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshlab.xds.bookkeeping import Sent, TypeState, Verdict, summarize

NAMES = st.sampled_from(["a", "b", "c", "d"])
VERSIONS = st.sampled_from(["v1", "v2", "v3"])


class Bookkeeping(RuleBasedStateMachine):
    """One type on one stream; FULL responses (state of the world, wildcard) or not."""

    def __init__(self) -> None:
        super().__init__()
        self.state = TypeState("type.googleapis.com/test.Thing")
        self.state.subscribe(set(), wildcard=True, replace=True)
        self.wildcard, self.names = True, set()
        self.full = False
        self.model_acked: dict[str, str] | None = None
        self.model_label: str | None = None
        self.in_flight: Sent | None = None
        self.rejected: Sent | None = None
        self.nonces = 0
        self.settled: list[str] = []

    @rule(full=st.booleans())
    def subscribe_everything(self, full: bool) -> None:
        self.full, self.wildcard, self.names = full, True, set()
        self.state.subscribe(set(), wildcard=True, replace=True)

    @rule(names=st.sets(NAMES, max_size=3))
    def subscribe_names(self, names: set) -> None:
        self.full, self.wildcard, self.names = False, False, set(names)
        self.state.subscribe(names, wildcard=False, replace=True)
        self._forget_unsubscribed()

    def _forget_unsubscribed(self) -> None:
        if self.model_acked is not None and not self.wildcard:
            self.model_acked = {n: v for n, v in self.model_acked.items() if n in self.names}

    @precondition(lambda self: self.in_flight is None)
    @rule(label=VERSIONS, updates=st.dictionaries(NAMES, VERSIONS, max_size=3), removals=st.sets(NAMES, max_size=2))
    def send(self, label: str, updates: dict, removals: set) -> None:
        self.nonces += 1
        response = Sent(str(self.nonces), label, updates, frozenset(removals - set(updates)), self.full)
        self.state.sent(response)
        self.in_flight = response

    @precondition(lambda self: self.in_flight is not None)
    @rule()
    def sending_twice_is_refused(self) -> None:
        with pytest.raises(RuntimeError):
            self.state.sent(Sent("x", "v", {}))

    @precondition(lambda self: self.in_flight is not None)
    @rule()
    def ack(self) -> None:
        sent = self.in_flight
        assert self.state.reply(sent.nonce, None) is Verdict.ACK
        base = {} if sent.full else dict(self.model_acked or {})
        base.update(sent.updates)
        for name in sent.removals:
            base.pop(name, None)
        self.model_acked, self.model_label = base, sent.label
        self._forget_unsubscribed()
        self.in_flight, self.rejected = None, None
        self.settled.append(sent.nonce)

    @precondition(lambda self: self.in_flight is not None)
    @rule(message=st.text(min_size=1, max_size=20))
    def nack(self, message: str) -> None:
        sent = self.in_flight
        assert self.state.reply(sent.nonce, (13, message)) is Verdict.NACK
        self.in_flight, self.rejected = None, sent
        self.settled.append(sent.nonce)

    @rule(data=st.data())
    def reply_with_a_settled_or_unknown_nonce(self, data) -> None:
        nonce = data.draw(st.sampled_from(self.settled + ["unknown"]))
        error = data.draw(st.sampled_from([None, (13, "late")]))
        assert self.state.reply(nonce, error) is Verdict.OTHER

    @rule()
    def plain_request(self) -> None:
        assert self.state.reply("", None) is Verdict.REQUEST

    @invariant()
    def matches_the_model(self) -> None:
        assert self.state.acked == self.model_acked
        assert self.state.acked_label == self.model_label
        assert self.state.pending == self.in_flight
        if self.rejected is not None:
            assert self.state.rejects(Sent("any nonce", self.rejected.label, dict(self.rejected.updates),
                                           self.rejected.removals, self.rejected.full))
        else:
            assert self.state.rejected is None


Bookkeeping.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_bookkeeping = Bookkeeping.TestCase


def test_unsubscribed_names_are_forgotten():
    state = TypeState("t")
    state.subscribe({"a", "b"}, wildcard=False, replace=True)
    state.sent(Sent("1", "v1", {"a": "x", "b": "y"}))
    state.reply("1", None)
    state.subscribe({"b"}, wildcard=False, replace=True)       # state of the world: the whole list
    assert state.acked == {"b": "y"}
    state.subscribe({"c"}, wildcard=False, replace=False)      # delta: one more name
    state.unsubscribe({"b"})
    assert state.names == {"c"} and state.acked == {}


def test_envoy_validation_errors_are_summarized():
    message = ('goo.gle/debugproto  \ncluster_name: "b"\nendpoints {\n}\n: Proto constraint validation failed '
               '(ClusterLoadAssignmentValidationError.Endpoints[0]: embedded message failed validation | caused by '
               'LbEndpointValidationError.Endpoint: embedded message failed validation | caused by '
               'SocketAddressValidationError.PortValue: value must be less than or equal to 65535)')
    assert summarize(message) == ("ClusterLoadAssignment.Endpoints[0].Endpoint.PortValue: "
                                  "value must be less than or equal to 65535")
    # several clusters rejected at once (a learner's SdsSecretConfig without a name): one chain, not all glued
    chain = ("Proto constraint validation failed (UpstreamTlsContextValidationError.CommonTlsContext: embedded "
             "message failed validation | caused by CommonTlsContextValidationError.TlsCertificateSdsSecretConfigs[0]: "
             "embedded message failed validation | caused by SdsSecretConfigValidationError.Name: value length must "
             "be at least 1 characters)")
    several = (f"Error adding/updating cluster(s) a: goo.gle/debugproto  \ncommon_tls_context {{\n}}\n: {chain}, "
               f"b: goo.gle/debugproto  \ncommon_tls_context {{\n}}\n: {chain}")
    expected = ("UpstreamTlsContext.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].Name: "
                "value length must be at least 1 characters")
    assert summarize(several) == expected
    assert summarize(several.replace("\n: ", " ")) == expected
    rbac = ("Proto constraint validation failed (RBACValidationError.Rules: embedded message failed validation | "
            "caused by RBACValidationError.Policies[callers]: embedded message failed validation | caused by "
            "PolicyValidationError.Principals: value must contain at least 1 item(s))")
    assert summarize(rbac) == "RBAC.Rules.Policies[callers].Principals: value must contain at least 1 item(s)"
    assert summarize("  plain\n  words ") == "plain words"
    assert len(summarize("x" * 1000)) == 300
