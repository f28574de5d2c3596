-- wrk script for benches/http.sh:
--   WRK_CONNECTIONS=C wrk -cC -s benches/pipeline.lua URL -- DEPTH
--
-- DEPTH > 1 sends DEPTH requests in one write and waits for all their
-- responses before the next batch (wrk's pipelining). At DEPTH 1 `request`
-- stays undefined, so wrk keeps its static request and no Lua runs per
-- request: the plain run measures the server, not the script.
--
-- `done` prints one line for http.sh, integers rather than wrk's rounded,
-- unit-suffixed text:
--   RESULT requests duration_us samples p50_us p99_us connect read write timeout status
-- where the last five are wrk's error counts (status: responses >= 400).
--
-- Why not latency:percentile(): wrk records one latency per batch (write to
-- last response), then, before `done`, adds coordinated-omission samples
-- assuming one request per connection every duration / (requests /
-- C) us. With pipelining that interval is DEPTH times too short,
-- samples land below the histogram's minimum where the percentile scan never
-- looks, and p90/p99 come out as 0. So the correction is undone here: it
-- added final[m + e] to every bucket m > e, hence original[m] = final[m] -
-- final[m + e]. Both shapes report the measured latencies, uncorrected.

-- wrk runs `init` in each thread's Lua state but `done` in another one, so
-- `done` cannot see the arguments; the connection count comes from the
-- environment instead.
local conns = tonumber(os.getenv("WRK_CONNECTIONS"))

init = function(args)
   local depth = tonumber(args[1]) or 1
   if depth > 1 then
      local r = {}
      for i = 1, depth do
         r[i] = wrk.format()
      end
      local batch = table.concat(r)
      request = function()
         return batch
      end
   end
end

done = function(summary, latency, requests)
   if not conns then
      error("set WRK_CONNECTIONS to wrk's -c")
   end
   local final, values = {}, {}
   for i = 1, #latency do
      local v, n = latency(i)
      final[v] = n
      values[#values + 1] = v
   end
   local per_conn = math.floor(summary.requests / conns)
   local e = per_conn > 0 and math.floor(summary.duration / per_conn) or math.huge
   local samples, bad = 0, 0
   local orig = {}
   for _, v in ipairs(values) do
      local n = final[v]
      if v > e then
         n = n - (final[v + e] or 0)
      end
      if n < 0 then
         bad = bad + 1
         n = 0
      end
      orig[#orig + 1] = n
      samples = samples + n
   end
   local function percentile(p)
      local rank = math.max(1, math.ceil(p / 100 * samples))
      local total = 0
      for i, v in ipairs(values) do
         total = total + orig[i]
         if total >= rank then
            return v
         end
      end
      return -1
   end
   if bad > 0 then
      io.stderr:write("pipeline.lua: could not undo wrk's latency correction\n")
      samples = -1
   end
   local err = summary.errors
   io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d %d\n",
      summary.requests, summary.duration, samples, percentile(50), percentile(99),
      err.connect, err.read, err.write, err.timeout, err.status))
end
