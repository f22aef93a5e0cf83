-- wrk script: a different token on every request (cache-miss benchmark).
-- TOKENS_FILE holds one token a line; run with one wrk thread so no token repeats.
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/chat", { ["authorization"] = "Bearer " .. tokens[(i % #tokens) + 1] })
end
