"""The same masking as Lab 10's Wasm filter, done by Lab 10's solution (Rust, V8) and by
a Lua filter (LuaJIT) written here with the same algorithm: what each adds per request
and how many requests per second each Envoy serves, in one run.

    .venv/bin/python benchmarks/wasm_vs_lua.py [--requests 1000] [--load 4000]

Four Envoys (1.40.0, one worker each, free ports): an upstream that answers every
request itself (`direct_response`, a 4 KB JSON page of 24 customer records with cards,
e-mails and phones), and three front Envoys routing to it: one without a filter, one
with the Wasm filter, one with the Lua filter. Latency: sequential keep-alive requests,
interleaved across the three so machine load hits all alike; p50 and p99 minus the
plain Envoy's are what the filter adds. Throughput: meshlab's load engine, 8
connections, one front Envoy at a time. Both filters' outputs are compared once first
(identical bodies, the same count). Every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import envoy_bench
import httpx
from meshlab import load
from meshlab.envoy import EnvoyProcess
from meshlab.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "labs" / "10-wasm"
SOLUTION = ROOT / "solutions" / "10-wasm" / "filter.rs"


def page() -> str:
    records = [{"id": i, "name": f"Customer {i}", "email": f"customer.{i}@example.com",
                "phone": f"+1 555-{100 + i:03d}-{4000 + i:04d}",
                "card": ["4111111111111111", "5500005555555559", "378282246310005", "4111111111111112"][i % 4],
                "order": f"{1234567890123 + i}"} for i in range(24)]
    return json.dumps({"customers": records}, indent=1)


MASKED = 24 + 24 + 18  # e-mails, phones, and the cards that pass Luhn (3 of every 4)

# The Lua filter: the specification of Lab 10, as byte loops like the Rust solution's.
LUA = r"""
local function is_local(b)
  return (b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122)
      or b == 46 or b == 95 or b == 37 or b == 43 or b == 45
end
local function is_digit(b) return b ~= nil and b >= 48 and b <= 57 end
local function is_alnum(b)
  return b ~= nil and ((b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122))
end

local function mask_emails(s)
  local out, n, i, len = {}, 0, 1, #s
  while i <= len do
    local b = s:byte(i)
    if not is_local(b) then
      out[#out + 1] = string.char(b); i = i + 1
    else
      local start = i
      while i <= len and is_local(s:byte(i)) do i = i + 1 end
      if s:byte(i) == 64 and is_alnum(s:byte(i + 1)) then
        out[#out + 1] = "***"; n = n + 1
      else
        out[#out + 1] = s:sub(start, i - 1)
      end
    end
  end
  return table.concat(out), n
end

local function mask_phones(s)
  local out, n, i, len = {}, 0, 1, #s
  while i <= len do
    if s:byte(i) == 43 and is_digit(s:byte(i + 1)) then
      local start, digits = i, 0
      i = i + 1
      while true do
        digits = digits + 1; i = i + 1
        local b = s:byte(i)
        if is_digit(b) then
        elseif (b == 32 or b == 45) and is_digit(s:byte(i + 1)) then i = i + 1
        else break end
      end
      if digits >= 8 and digits <= 15 then
        out[#out + 1] = "[phone]"; n = n + 1
      else
        out[#out + 1] = s:sub(start, i - 1)
      end
    else
      out[#out + 1] = s:sub(i, i); i = i + 1
    end
  end
  return table.concat(out), n
end

local function luhn(run)
  local sum, len = 0, #run
  for k = 0, len - 1 do
    local d = run:byte(len - k) - 48
    if k % 2 == 1 then d = d * 2; if d > 9 then d = d - 9 end end
    sum = sum + d
  end
  return sum % 10 == 0
end

local function mask_cards(s)
  local n = 0
  local masked = s:gsub("%d+", function(run)
    if #run >= 13 and #run <= 19 and luhn(run) then
      n = n + 1
      return string.rep("*", #run - 4) .. run:sub(-4)
    end
    return run
  end)
  return masked, n
end

local function is_text(content_type)
  local media = (content_type:match("^[^;]*") or ""):lower():gsub("^%s+", ""):gsub("%s+$", "")
  return media:sub(1, 5) == "text/" or media == "application/json" or media:sub(-5) == "+json"
end

function envoy_on_response(handle)
  local headers = handle:headers()
  if not is_text(headers:get("content-type") or "") then return end
  headers:remove("content-length")
  local body = handle:body()          -- the whole body: Lua holds the headers meanwhile
  local text = body:getBytes(0, body:length())
  text = mask_emails(text)
  text = mask_phones(text)
  text = mask_cards(text)
  body:setBytes(text)   -- (the count is left out: a header set after body() did not arrive)
end
"""

def upstream(port: int, page: Path) -> str:
    """The Envoy that serves PAGE as JSON itself, on every path."""
    return envoy_bench.proxy(port, [envoy_bench.direct({"filename": str(page)})], hcm={"stat_prefix": "upstream"},
                             route_config={"max_direct_response_body_size_bytes": 65536,
                                           "response_headers_to_add": [
                                               {"header": {"key": "content-type", "value": "application/json"}}]})


def front(port: int, upstream_port: int, filters: list[dict]) -> str:
    """An Envoy routing to the upstream with FILTERS, trailers on, Lab 10's buffer limit."""
    return envoy_bench.proxy(port, [envoy_bench.to_cluster("upstream")], filters=filters,
                             clusters=[envoy_bench.cluster("upstream", upstream_port)],
                             hcm={"stat_prefix": "front", "http_protocol_options": {"enable_trailers": True}},
                             listener={"per_connection_buffer_limit_bytes": 65536})


def build_wasm(work: Path) -> Path:
    """Lab 10's solution, built by the lab's own build.py in a copy of the lab."""
    lab = work / "lab"
    shutil.copytree(LAB, lab, ignore=shutil.ignore_patterns("build"))
    shutil.copy(SOLUTION, lab / "filter.rs")
    subprocess.run([sys.executable, "build.py"], cwd=lab, check=True, capture_output=True)
    return lab / "build" / "filter.wasm"


def same_masking(urls: dict[str, str]) -> None:
    """Both filters must produce the same masked body, or the comparison is void."""
    plain, wasm, lua = (httpx.get(urls[name], trust_env=False).content for name in ("plain", "wasm", "lua"))
    if wasm != lua or wasm == plain or b"4111111111111111" in wasm:
        raise SystemExit("the Wasm and Lua filters do not mask alike: no comparison")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per Envoy (latency)")
    parser.add_argument("--load", type=int, default=4000, help="requests per Envoy at 8 connections (throughput)")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="meshlab-bench-wasm-"))
    envoys: list[EnvoyProcess] = []
    try:
        (work / "page.json").write_text(page())
        (work / "mask.lua").write_text(LUA)
        wasm = build_wasm(work)
        upstream_port = free_port()
        envoys.append(envoy_bench.start(work, "upstream", upstream(upstream_port, work / "page.json")))
        filters = {"plain": [], "wasm": [envoy_bench.wasm_filter(wasm)], "lua": [envoy_bench.lua_filter(work / "mask.lua")]}
        urls = {}
        for name, chosen in filters.items():
            port = free_port()
            envoys.append(envoy_bench.start(work, name, front(port, upstream_port, chosen)))
            urls[name] = f"http://127.0.0.1:{port}/"
        same_masking(urls)
        samples = envoy_bench.interleaved(urls, options.requests)
        throughput = {name: load.run(url, engine="builtin", requests=options.load, concurrency=8) for name, url in
                      urls.items()}
    finally:
        for envoy in reversed(envoys):
            envoy.stop()
        shutil.rmtree(work, ignore_errors=True)

    base50, base99 = envoy_bench.percentiles(samples["plain"])
    print(f"body: {len(page())} bytes of JSON, {MASKED} items masked per response")
    print(f"latency: {options.requests} sequential keep-alive requests per Envoy, interleaved")
    print(f"throughput: {options.load} requests per Envoy, 8 connections (meshlab's load engine)")
    print(f"{'':8} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} {'req/s':>8}")
    for name in urls:
        p50, p99 = envoy_bench.percentiles(samples[name])
        result = throughput[name]
        if result.ok != options.load:
            raise SystemExit(f"{name}: only {result.ok} of {options.load} requests answered 200")
        print(f"{name:8} {p50:8.3f} {p99:8.3f} {p50 - base50:+10.3f} {p99 - base99:+10.3f} {result.actual_qps:8.0f}")
    wasm50, lua50 = (envoy_bench.percentiles(samples[n])[0] - base50 for n in ("wasm", "lua"))
    print(f"added p50, Wasm / Lua: {wasm50 / lua50:.2f}" if lua50 > 0 else "Lua added nothing measurable")


if __name__ == "__main__":
    main()
