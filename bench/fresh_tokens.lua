-- wrk script: a different token on every request (cache-miss benchmark).
-- TOKENS_FILE holds one token a line; TOKENS_OFFSET (default 0) is where this
-- run starts, so interleaved rounds do not replay each other's tokens. Run with
-- one wrk thread so no token repeats within a run.
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
local i = tonumber(os.getenv("TOKENS_OFFSET") or "0")
request = function()
  i = i + 1
  return wrk.format("GET", "/api/chat", { ["authorization"] = "Bearer " .. tokens[(i % #tokens) + 1] })
end
