-- wrk script: the requests `cargo xtask load` sends, POST /orders with a
-- JSON order (user load_user_<i mod 10000>, the four products in turn,
-- quantity 1) and the bearer token. `cargo xtask load --against-wrk` runs
-- it to compare the load generator's own CPU per request with wrk's.
--
--   wrk -t1 -c2 -d30s -s bench/wrk/post-orders.lua \
--       http://127.0.0.1:8080/orders -- 'Bearer demo-token'
--
-- The 10,000 requests are built once per thread in init(), as wrk's
-- SCRIPTING advises, so request() costs wrk a table lookup: the cheapest
-- way wrk can send varying requests, and the fairest yardstick.
--
-- done() prints one line for the xtask to read: requests answered, errors,
-- the run's duration (µs), and the CPU seconds (user + system) of the
-- whole wrk process so far, from os.clock() (C's clock(), every thread).

local products = { "A001", "B001", "C001", "D001" }
local requests = {}
local n = 0

function init(args)
   local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = args[1] or "Bearer demo-token",
   }
   for i = 0, 9999 do
      local body = string.format(
         '{"user_id":"load_user_%d","product_id":"%s","quantity":1}',
         i, products[i % #products + 1])
      requests[i + 1] = wrk.format("POST", nil, headers, body)
   end
end

function request()
   n = n % #requests + 1
   return requests[n]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "wrk-cost requests=%d errors=%d duration_us=%d cpu_seconds=%.6f\n",
      summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
      summary.duration, os.clock()))
end
