"""Lab 08 graded for real (three Envoys, Prometheus, the trace store): the starter fails
every check, the solution passes and leaves nothing behind; plausible mistakes fail the
checks they should, each for its own reason (a metrics port that serves the whole admin
API, an app that forgets the trace context, a rate over a gauge, a copy-pasted service
name, an error ratio that counts 404s, histogram_quantile without `le`); unusual correct
answers pass (default sampling, every header copied, increase()/60, per-code series,
`sum without`). Wrong variants are combined so that each run fails a disjoint set of
checks: a full run costs half a minute."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import yaml
from lab_variants import fails_only, passes

pytestmark = pytest.mark.lab_runs

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "08-observability"
STARTER = ROOT / "labs" / "08-observability"
SIDECARS = ("productpage", "reviews", "ratings")
CHECKS = {"test_prometheus_scrapes_every_sidecar", "test_every_request_is_traced",
          "test_one_trace_across_three_hops", "test_request_rate", "test_error_ratio", "test_p99_latency"}
LOCAL = 'envoy_cluster_name="local_app"'


def sidecar(name: str) -> dict:
    return yaml.safe_load((SOLUTION / f"sidecar-{name}.yaml").read_text())


def inbound_hcm(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def metrics_routes(config: dict) -> list:
    listener = config["static_resources"]["listeners"][1]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]


def variant(change=None, *, propagation: str | None = None, **queries: str) -> dict[str, str]:
    """The solution with CHANGE(name, config) applied to each sidecar, another
    propagation.py, and some queries of signals.yaml replaced."""
    files = {}
    for name in SIDECARS:
        config = sidecar(name)
        if change:
            change(name, config)
        files[f"sidecar-{name}.yaml"] = yaml.safe_dump(config, sort_keys=False)
    if propagation is not None:
        files["propagation.py"] = propagation
    if queries:
        signals = yaml.safe_load((SOLUTION / "signals.yaml").read_text())
        files["signals.yaml"] = yaml.safe_dump({**signals, **queries}, sort_keys=False)
    return files


def test_solution_passes_and_leaves_nothing_behind(grade, lab_copy):
    folder = lab_copy(8, base="solution")
    code, checks, data = grade(8, path=folder)
    assert code == 0, data
    assert {cid for cid, c in checks.items() if c["status"] == "pass"} == CHECKS
    assert "productpage" in " ".join(checks["test_one_trace_across_three_hops"]["notes"])
    assert "the sidecar saw" in " ".join(checks["test_p99_latency"]["notes"])
    assert not (folder / "prometheus-data").exists()  # Prometheus's time series went with it
    left = [p.info for p in psutil.process_iter(["pid", "name", "cwd"]) if p.info["cwd"] == str(folder)]
    assert not left, left


def test_a_leaky_metrics_port_broken_propagation_and_a_rate_of_a_gauge(grade):
    def whole_admin(name, config):
        metrics_routes(config)[0]["match"] = {"prefix": "/"}

    checks = fails_only(grade, 8, variant(
        whole_admin, propagation=(STARTER / "propagation.py").read_text(),
        request_rate=f"sum by (service) (rate(envoy_cluster_upstream_rq_active{{{LOCAL}}}[1m]))"),
        {"test_prometheus_scrapes_every_sidecar", "test_one_trace_across_three_hops", "test_request_rate"})
    assert "more of the admin API" in checks["test_prometheus_scrapes_every_sidecar"]["message"]
    one_trace = checks["test_one_trace_across_three_hops"]
    assert "fell apart into 3 separate traces" in one_trace["message"], one_trace
    assert "productpage -> reviews, reviews -> ratings" in one_trace["message"]
    assert "traceparent" in one_trace["hint"]
    assert "gauge" in checks["test_request_rate"]["hint"]


def test_a_copy_pasted_service_name_404s_counted_as_errors_and_a_quantile_without_le(grade):
    def copy_paste(name, config):
        if name == "ratings":
            inbound_hcm(config)["tracing"]["provider"]["typed_config"]["service_name"] = "reviews"

    checks = fails_only(grade, 8, variant(
        copy_paste,
        error_ratio=(f'sum by (service) (rate(envoy_cluster_upstream_rq_xx{{{LOCAL}, envoy_response_code_class=~"4|5"}}'
                     f"[1m])) / sum by (service) (rate(envoy_cluster_upstream_rq_total{{{LOCAL}}}[1m]))"),
        p99_latency_ms=("histogram_quantile(0.99, sum by (service) "
                        f"(rate(envoy_cluster_upstream_rq_time_bucket{{{LOCAL}}}[1m])))")),
        {"test_every_request_is_traced", "test_error_ratio", "test_p99_latency"})
    assert "the ratings sidecar's spans say ['reviews']" in checks["test_every_request_is_traced"]["received"]
    assert "off for productpage" in checks["test_error_ratio"]["message"]
    assert "returned no series" in checks["test_p99_latency"]["message"]


EVERY_HEADER = '''
def outgoing_headers(incoming):
    return {name: value for name, value in incoming.items() if name != "host"}
'''


def test_unusual_correct_answers_pass(grade):
    def unusual(name, config):
        inbound_hcm(config)["tracing"].pop("random_sampling")  # 100 % is the default
        metrics_routes(config)[0]["match"] = {"prefix": "/stats/prometheus"}

    passes(grade, 8, variant(
        unusual, propagation=EVERY_HEADER,
        request_rate=f"sum by (service) (increase(envoy_cluster_upstream_rq_total{{{LOCAL}}}[1m])) / 60",
        error_ratio=(f'sum by (service) (rate(envoy_cluster_upstream_rq{{{LOCAL}, envoy_response_code=~"5.."}}[1m]))'
                     f" / sum by (service) (rate(envoy_cluster_upstream_rq{{{LOCAL}}}[1m]))"),
        p99_latency_ms=("histogram_quantile(0.99, sum without (instance, job, envoy_cluster_name) "
                        f"(rate(envoy_cluster_upstream_rq_time_bucket{{{LOCAL}}}[1m])))")))


def test_a_query_prometheus_refuses_names_its_line_and_reason(grade):
    checks = fails_only(grade, 8, variant(
        request_rate=f"sum by service (rate(envoy_cluster_upstream_rq_total{{{LOCAL}}}[1m]))"),
        {"test_request_rate"})
    refused = checks["test_request_rate"]
    # variant() writes signals.yaml with request_rate first.
    assert "Prometheus refused request_rate (signals.yaml:1): 1:8: parse error" in refused["message"], refused
    assert refused["received"].startswith("sum by service") and "gauge" in refused["hint"]


def test_a_metrics_port_on_the_wrong_number_fails_the_signals_at_once_and_says_why(grade):
    def istio_port(name, config):
        if name == "productpage":  # Istio's number, not the one prometheus.yml scrapes
            config["static_resources"]["listeners"][1]["address"]["socket_address"]["port_value"] = 15090

    checks = fails_only(grade, 8, variant(istio_port), {"test_prometheus_scrapes_every_sidecar", "test_request_rate",
                                                        "test_error_ratio", "test_p99_latency"})
    assert "cannot scrape 1 of the 3" in checks["test_prometheus_scrapes_every_sidecar"]["message"]
    rate = checks["test_request_rate"]
    assert "cannot scrape the sidecar of productpage" in rate["message"], rate
    assert "127.0.0.1:15091" in rate["received"] and "step 2" in rate["hint"]


def test_a_tracer_exporting_to_a_cluster_that_does_not_exist_is_named(grade):
    def typo(name, config):
        if name == "reviews":  # Envoy accepts it, counts the spans as sent, and drops them
            inbound_hcm(config)["tracing"]["provider"]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] \
                = "otel"

    # Preflight names it before anything starts: the file and the cluster.
    code, checks, data = grade(8, files=variant(typo))
    assert code == 2 and not checks, data
    assert "sidecar-reviews.yaml" in data["error"]["where"], data["error"]
    assert "names cluster 'otel'" in data["message"], data
