-- Lab 05 — the bucketing filter. Envoy runs envoy_on_request for every request before
-- it is routed, and envoy_on_response for every response on its way back.
--
-- The specification (the checker computes the same in Python):
--   h = 5381; for each byte c of the x-user-id value: h = (h * 33 + c) mod 2^32
--   bucket = "experimental" if h mod 100 < 20, else "stable"
--   a request without x-user-id is "stable"

function envoy_on_request(request_handle)
  -- TODO(step 2): compute the bucket of the x-user-id header and set the request
  --   header x-user-bucket to it (replacing any value the client sent).
end

function envoy_on_response(response_handle)
  -- TODO(step 3): add x-envoy-lua-processed: true to every response.
end
