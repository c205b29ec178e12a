"""Preflight against the real Envoy: each kind of config mistake is refused before
anything starts, and the error names the YAML line, the field and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab import preflight, yamlfile
from meshlab.envoy import find_binary
from meshlab.errors import EnvoyConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = (ROOT / "solutions" / "01-hello-mesh" / "envoy.yaml").read_text()


def refused(tmp_path: Path, old: str, new: str) -> tuple[EnvoyConfigError, str]:
    assert old in SOLUTION, old
    text = SOLUTION.replace(old, new, 1)
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    with pytest.raises(EnvoyConfigError) as caught:
        preflight.check_envoy_config(yamlfile.load(path), cwd=tmp_path, binary=find_binary())
    return caught.value, text


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old, new, summary, fix, line_text", [
    ("stat_prefix: ingress_http", "stat_prefx: ingress_http",
     "unknown field 'stat_prefx' in HttpConnectionManager", "did you mean 'stat_prefix'?", "stat_prefx"),
    ("socket_address: { address: 127.0.0.1, port_value: 8080 }",
     "socket_adress: { address: 127.0.0.1, port_value: 8080 }",
     "unknown field 'socket_adress' in Address", "did you mean 'socket_address'?", "socket_adress"),
    ("static_resources:", "static_resource:",
     "unknown field 'static_resource' in Bootstrap", "did you mean 'static_resources'?", "static_resource:"),
    ("port_value: 8080", "port_value: eighty", "wrong value", "expected type", "eighty"),
    ("connect_timeout: 1s", "connect_timeout: 1 sec", "duration must end with a single 's'", "0.25s", "1 sec"),
    ("route: { cluster: app }", "route: { cluster: ap }", "cluster 'ap', which is not defined",
     "did you mean 'app'?", "cluster: ap }"),
    ("type: STATIC", "type: STATIK", "unknown value 'STATIK'", "UPPER_CASE", "STATIK"),
    ("http.router.v3.Router", "http.router.v3.Routr", "unknown @type", "did you mean "
     "'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'?", "v3.Routr"),
    ("port_value: 10000", "port_value: 99999", "less than or equal to 65535", "constraint", "99999"),
    ('domains: ["*"]', "domains: []", "at least 1 item", "constraint", "domains: []"),
])
def test_envoy_errors_map_back_to_the_yaml(tmp_path, old, new, summary, fix, line_text):
    error, text = refused(tmp_path, old, new)
    assert summary in error.message
    assert fix in (error.fix or "")
    assert error.where.line == line_of(text, line_text), (error.where, error.message)
    assert "Envoy said:" in error.details  # Envoy's own words are kept, cleaned up


def test_the_solution_passes_preflight(tmp_path):
    path = tmp_path / "envoy.yaml"
    path.write_text(SOLUTION)
    preflight.check_envoy_config(yamlfile.load(path), cwd=tmp_path, binary=find_binary())


def test_python_syntax_errors_have_a_line(tmp_path):
    path = tmp_path / "control_plane.py"
    path.write_text("def ok():\n    return 1\n\ndef broken(:\n    pass\n")
    with pytest.raises(InputError) as caught:
        preflight.check_python(path)
    assert caught.value.where.line == 4
    assert "not valid Python" in caught.value.message


def test_message_fields_come_from_envoys_api():
    assert "stat_prefix" in preflight.message_fields(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")
    assert preflight.message_fields("envoy.nothing.v3.Missing") == []


LUA_CONFIG = (ROOT / "labs" / "05-lua" / "envoy.yaml").read_text()
LUA_SOLUTION = (ROOT / "solutions" / "05-lua" / "bucket.lua").read_text()


def test_a_lua_syntax_error_is_reported_in_the_lua_file_at_its_line(tmp_path):
    broken = LUA_SOLUTION.replace("  for i = 1, #text do\n", "  for i = 1, #text\n")
    (tmp_path / "bucket.lua").write_text(broken)
    (tmp_path / "envoy.yaml").write_text(LUA_CONFIG)
    with pytest.raises(EnvoyConfigError) as caught:
        preflight.check_envoy_config(yamlfile.load(tmp_path / "envoy.yaml"), cwd=tmp_path, binary=find_binary())
    error = caught.value
    assert error.where.file.name == "bucket.lua"
    assert error.where.line == line_of(broken, "h = (h * 33")  # Lua notices at the next token
    assert "'do' expected near 'h'" in error.message and "bucket.lua" in error.message
    assert "> " in error.details and "h = (h * 33" in error.details  # an excerpt of the Lua file


def test_a_lua_error_in_an_inline_script_points_into_the_yaml(tmp_path):
    script = "function envoy_on_request(request_handle)\n  local x = = 1\nend\n"
    inline = "inline_string: |\n" + "".join(f"                  {line}\n" for line in script.splitlines())
    config = LUA_CONFIG.replace("default_source_code: { filename: bucket.lua }",
                                "default_source_code:\n                " + inline.rstrip("\n"))
    assert config != LUA_CONFIG
    (tmp_path / "envoy.yaml").write_text(config)
    with pytest.raises(EnvoyConfigError) as caught:
        preflight.check_envoy_config(yamlfile.load(tmp_path / "envoy.yaml"), cwd=tmp_path, binary=find_binary())
    assert caught.value.where.file.name == "envoy.yaml"
    assert caught.value.where.line == line_of(config, "local x = = 1"), caught.value


@pytest.mark.parametrize("old, new, fix, line_text", [
    ("        - endpoint:\n            address:\n              socket_address: { address: 127.0.0.1, port_value: 8080 }",
     "        - address:\n            socket_address: { address: 127.0.0.1, port_value: 8080 }",
     "this field belongs under `endpoint:` (Endpoint), not directly in LbEndpoint: check the indentation",
     "- address:"),
    ("      - name: envoy.filters.network.http_connection_manager\n",
     "      - name: envoy.filters.network.http_connection_manager\n"
     "        transport_socket: { name: envoy.transport_sockets.tls }\n",
     "this field belongs on FilterChain, not on Filter: check the indentation", "transport_socket:"),
    ("                route: { cluster: app }",
     "                route: { cluster: app }\n                include_attempt_count_in_response: true",
     "this field belongs on VirtualHost, not on Route: check the indentation", "include_attempt_count"),
    ("                route: { cluster: app }",
     "                route: { cluster: app, include_attempt_count_in_response: true }",
     "this field belongs on VirtualHost, not on RouteAction: check the indentation", "include_attempt_count"),
])
def test_a_field_at_the_wrong_depth_is_sent_where_it_belongs(tmp_path, old, new, fix, line_text):
    error, text = refused(tmp_path, old, new)
    assert error.fix == fix, error.fix
    assert error.where.line == line_of(text, line_text)


def test_a_missing_type_in_an_any_asks_for_the_type(tmp_path):
    error, text = refused(tmp_path, '          "@type": type.googleapis.com/envoy.extensions.filters.network.'
                                    'http_connection_manager.v3.HttpConnectionManager\n', "")
    assert 'no "@type"' in error.message, error.message
    assert '"@type": type.googleapis.com/' in error.fix and "durations" not in error.fix, error.fix
    assert error.where.line == line_of(text, "typed_config:")


def test_a_grpc_service_naming_no_cluster_is_refused_at_its_line(tmp_path):
    # Envoy itself starts with it (the rate limit then fails open on every request).
    solution = (ROOT / "solutions" / "09-rate-limit" / "envoy-a.yaml").read_text()
    text = solution.replace("envoy_grpc: { cluster_name: ratelimit }",
                            "envoy_grpc: { cluster_name: ratelimit_service }")
    assert text != solution
    path = tmp_path / "envoy-a.yaml"
    path.write_text(text)
    accepted, _ = preflight.validate(find_binary(), path, cwd=tmp_path)
    assert accepted  # what makes the check worth having
    with pytest.raises(EnvoyConfigError) as caught:
        preflight.check_envoy_config(yamlfile.load(path), cwd=tmp_path, binary=find_binary())
    error = caught.value
    assert "ratelimit_service" in str(error)
    assert error.where.line == line_of(text, "ratelimit_service")
    assert "did you mean 'ratelimit'?" in error.fix


def test_a_grpc_service_naming_a_static_cluster_passes(tmp_path):
    path = tmp_path / "envoy-a.yaml"
    path.write_text((ROOT / "solutions" / "09-rate-limit" / "envoy-a.yaml").read_text())
    preflight.check_envoy_config(yamlfile.load(path), cwd=tmp_path, binary=find_binary())
