"""Lab 05 graded for real: Lua that only looks right fails the check it should, and
unusual correct filters pass. tests/test_course_proves_itself.py grades the starter
(whose empty filter fails every check but the one about Lua errors) and the solution."""

from __future__ import annotations

from pathlib import Path

import pytest
from lab_variants import fails_only, passes

pytestmark = pytest.mark.lab_runs

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "05-lua"
LUA = (SOLUTION / "bucket.lua").read_text()
ENVOY = (SOLUTION / "envoy.yaml").read_text()


def lua(old: str, new: str) -> dict[str, str]:
    assert old in LUA, old
    return {"bucket.lua": LUA.replace(old, new)}


def envoy(old: str, new: str) -> dict[str, str]:
    assert old in ENVOY, old
    return {"envoy.yaml": ENVOY.replace(old, new)}


# -- plausible but wrong ------------------------------------------------------------

def test_signed_32_bit_arithmetic(grade):
    checks = fails_only(grade, 5, lua("h = (h * 33 + text:byte(i)) % 4294967296",
                                          "h = bit.tobit(h * 33 + text:byte(i))"),
                        {"test_bucket_follows_spec"})
    assert "signed 32-bit" in checks["test_bucket_follows_spec"]["hint"]


def test_off_by_one_threshold(grade):
    checks = fails_only(grade, 5, lua("% 100 < 20", "% 100 <= 20"), {"test_bucket_follows_spec"})
    assert "not <= 20" in checks["test_bucket_follows_spec"]["hint"]


def test_add_lets_the_client_pick_its_bucket(grade):
    checks = fails_only(grade, 5, lua('headers:replace("x-user-bucket"', 'headers:add("x-user-bucket"'),
                        {"test_client_cannot_choose_bucket"})
    assert "replace" in checks["test_client_cannot_choose_bucket"]["hint"]


def test_route_cache_left_stale(grade):
    files = envoy("default_source_code: { filename: bucket.lua }",
                  "default_source_code: { filename: bucket.lua }\n              clear_route_cache: false")
    # The stale route is the one the client's own headers chose: a forged bucket wins too.
    checks = fails_only(grade, 5, files, {"test_version_follows_bucket", "test_client_cannot_choose_bucket"})
    assert "route was picked before Lua set the header" in checks["test_version_follows_bucket"]["hint"]
    assert "route" in checks["test_client_cannot_choose_bucket"]["hint"]


def test_a_nil_user_id_crashes_the_filter(grade):
    files = lua('  if id == nil then\n    return "stable"\n  end\n', "")
    checks = fails_only(grade, 5, files, {"test_no_header_is_stable", "test_no_lua_errors"})
    # Envoy stops the script, counts the error and passes the request on without a bucket.
    assert "x-user-bucket: None" in checks["test_no_header_is_stable"]["received"]
    assert "lua.errors +1" in checks["test_no_header_is_stable"]["hint"]
    assert "failed" in checks["test_no_lua_errors"]["message"]


def test_a_random_bucket(grade):
    # Whether the ten cheating clients happen to draw "stable" is chance; the rest is certain.
    checks = fails_only(grade, 5, lua("  if djb2(id) % 100 < 20 then", "  if math.random(100) <= 20 then"),
                        {"test_bucket_follows_spec", "test_same_user_same_bucket"},
                        may_fail={"test_client_cannot_choose_bucket"})
    assert "changed bucket or version" in checks["test_same_user_same_bucket"]["message"]


def test_no_response_marker(grade):
    files = lua('  response_handle:headers():add("x-envoy-lua-processed", "true")\n', "")
    fails_only(grade, 5, files, {"test_response_marked", "test_filter_latency"})


# -- unusual but correct ------------------------------------------------------------

def test_stale_cache_cleared_by_hand_and_bit_arithmetic_made_unsigned(grade):
    files = envoy("default_source_code: { filename: bucket.lua }",
                  "default_source_code: { filename: bucket.lua }\n              clear_route_cache: false")
    files["bucket.lua"] = LUA.replace(
        "h = (h * 33 + text:byte(i)) % 4294967296", "h = bit.tobit(h * 33 + text:byte(i))"
    ).replace("  return h\n", "  if h < 0 then h = h + 4294967296 end\n  return h\n").replace(
        'headers:replace("x-user-bucket", bucket(headers:get("x-user-id")))',
        'headers:replace("x-user-bucket", bucket(headers:get("x-user-id")))\n  request_handle:clearRouteCache()')
    passes(grade, 5, files)


def test_inline_code_and_a_regex_route(grade):
    inline = "inline_code: |\n" + "".join(f"                {line}\n" if line else "\n" for line in LUA.splitlines())
    files = {"envoy.yaml": ENVOY.replace("default_source_code: { filename: bucket.lua }", inline).replace(
        "string_match: { exact: experimental }", "string_match: { safe_regex: { regex: '^exp.*' } }")}
    assert "inline_code" in files["envoy.yaml"] and "safe_regex" in files["envoy.yaml"]
    passes(grade, 5, files)
