-- wrk script: the OpenID Connect code exchange (POST /oidc/token, grant_type=authorization_code)
-- as a confidential client (client_secret_basic), each request with a code of its own.
-- Usage: wrk … -s bench/oidc_token.lua URL -- BASIC REDIRECT_URI FIRST PER_THREAD
--   BASIC       base64 of "client_id:client_secret"
--   FIRST       the number of the first code seeded for this run (bench/oidc.sh)
--   PER_THREAD  codes per wrk thread: thread i (1-based) uses FIRST + (i-1)*PER_THREAD onwards,
--               so no two threads (nor two connections: one thread's connections share its
--               counter) ever present the same code.
-- A code is "c", its number on 12 digits, 29 "x" and a final "A": 43 base64url characters
-- that decode (the last one carries no stray bits), as bench/oidc.sh seeds them.
-- Every answer is checked: one that is not a 200 with an access token counts as failed, and
-- done() prints the counts ("oidc check: …"), which bench/oidc.sh reads.

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local function form_escape(text)
  return (text:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

function init(args)
  local first, per_thread = tonumber(args[3]), tonumber(args[4])
  n = first + (id - 1) * per_thread
  last = n + per_thread -- one past this thread's range
  failed = 0
  tokens = 0
  beyond = 0
  redirect = form_escape(args[2])
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Basic " .. args[1]
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  if n >= last then beyond = beyond + 1 end
  local code = string.format("c%012d", n) .. string.rep("x", 29) .. "A"
  n = n + 1
  return wrk.format(nil, nil, nil,
    "grant_type=authorization_code&code=" .. code .. "&redirect_uri=" .. redirect)
end

function response(status, headers, body)
  if status == 200 and string.find(body, '"access_token"', 1, true)
      and string.find(body, '"id_token"', 1, true) then
    tokens = tokens + 1
  else
    failed = failed + 1
    if failed <= 3 then io.stderr:write("oidc exchange answered " .. status .. ": " .. body .. "\n") end
  end
end

function done(summary, latency, requests)
  local ok, bad, over = 0, 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("tokens")
    bad = bad + thread:get("failed")
    over = over + thread:get("beyond")
  end
  io.write(string.format("oidc check: %d answers with tokens, %d failed, %d codes beyond the seeded range\n",
    ok, bad, over))
end
