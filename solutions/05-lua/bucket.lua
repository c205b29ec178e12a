-- Lab 05 — the bucketing filter, solved.
--
-- bucket(id): djb2 over the bytes of x-user-id, modulo 2^32; "experimental" when the
-- hash modulo 100 is below 20, else "stable". Users without x-user-id are "stable".
--
-- LuaJIT's numbers are doubles: h * 33 + byte stays below 2^38, exact, and `%` wraps
-- it to 32 bits without the `bit` library (whose results are signed 32-bit numbers).

local function djb2(text)
  local h = 5381
  for i = 1, #text do
    h = (h * 33 + text:byte(i)) % 4294967296
  end
  return h
end

local function bucket(id)
  if id == nil then
    return "stable"
  end
  if djb2(id) % 100 < 20 then
    return "experimental"
  end
  return "stable"
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  -- replace, not add: a client must not choose its own bucket.
  headers:replace("x-user-bucket", bucket(headers:get("x-user-id")))
end

function envoy_on_response(response_handle)
  response_handle:headers():add("x-envoy-lua-processed", "true")
end
