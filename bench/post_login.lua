-- wrk script: POST /login as one browser, with its cookie and CSRF token.
-- Usage: wrk … -s bench/post_login.lua URL -- "COOKIE HEADER" CSRF_TOKEN EMAIL
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Cookie"] = args[1]
  local email = args[3]:gsub("@", "%%40")
  wrk.body = "email=" .. email .. "&csrf_token=" .. args[2]
end
