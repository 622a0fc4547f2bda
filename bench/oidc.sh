#!/usr/bin/env bash
# OpenID Connect at speed (issue #24, point 7), on loopback, never part of the tests:
#   - the code exchange: POST /oidc/token, grant_type=authorization_code, a confidential client
#     authenticating with client_secret_basic, one fresh code per request;
#   - GET /oidc/userinfo with a bearer access token (answered from the session cache);
#   - GET /login measured in the same run, the reference of the userinfo target.
# Targets: userinfo >= 60% of GET /login with no SQL per request; the exchange >= 1,000/s.
#
# The codes: going through /oidc/authorize costs a request and an audit row per code, so the
# codes are inserted straight into oidc_codes (generate_series) right before each wrk run, the
# way /oidc/authorize stores them: the digest is SHA-256 of the code, for the live session of
# the signed-in bench member, the registered app and redirect URI, scope "openid email profile",
# no nonce, no PKCE (a confidential client may do without; it then sends no verifier), valid
# 60 s. BENCH_OIDC_CODE_RATE codes per second of run (6,000) are seeded; each wrk thread takes
# a range of its own (bench/oidc_token.lua). Every answer is checked: a run with one exchange
# that did not answer 200 with tokens fails the report, since its rate would mean nothing.
# The app is registered with the real command line (`latchkey apps add … --oidc`), and the
# userinfo token comes from one real flow (GET /oidc/authorize with the session cookie, then
# POST /oidc/token).
#
# Run on its own:
#   bench/oidc.sh                       # builds the release binary; target/bench-oidc/results.md
#   LATCHKEY_BIN=/path/to/latchkey bench/oidc.sh   # measures that binary, builds nothing
# It starts a private PostgreSQL cluster and Latchkey as bench/run.sh does (bench/lib.sh).
# bench/run.sh sources this file and calls oidc_register and bench_oidc, so the full
# benchmark includes these runs.
#
# Settings: BENCH_DURATION (10s here, 15s in run.sh), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
#           BENCH_OIDC_CODE_RATE (6000), LATCHKEY_BIN.

# shellcheck shell=bash

# oidc_register: the bench app as a confidential OpenID Connect client, with the real command
# line; sets oidc_client_id, oidc_basic (base64 of "id:secret") and oidc_redirect.
oidc_register() {
  local printed client_secret
  oidc_redirect=http://127.0.0.1:9/cb
  printed=$(lk_cli apps add benchapp http://benchapp.localhost:9 --oidc \
    --redirect-uri "$oidc_redirect" --roles admin,member 2> "$out/oidc-register.log") \
    || die "latchkey apps add --oidc failed: $(cat "$out/oidc-register.log")"
  oidc_client_id=$(sed -n 's/^client_id: //p' <<<"$printed")
  client_secret=$(sed -n "s/^client_secret: //p" <<<"$printed")
  [ -n "$oidc_client_id" ] && [ -n "$client_secret" ] || die "latchkey apps add --oidc printed no client id and secret"
  # RFC 6749 §2.3.1 form-encodes each half; both are base64url already.
  oidc_basic=$(printf '%s:%s' "$oidc_client_id" "$client_secret" | base64 -w0)
}

# oidc_code_flow SCOPE: one real authorization (the signed-in browser of $jar asks
# /oidc/authorize, which answers 303 to the redirect URI with the code) and its exchange;
# prints the token endpoint's JSON answer.
oidc_code_flow() {
  local scope=$1 location code
  location=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -b "$jar" --get \
    --data-urlencode response_type=code --data-urlencode "client_id=$oidc_client_id" \
    --data-urlencode "redirect_uri=$oidc_redirect" --data-urlencode "scope=$scope" \
    --data-urlencode state=s "$base/oidc/authorize")
  [ "${location%% *}" = 303 ] || die "GET /oidc/authorize answered $location"
  code=$(python3 -c 'import sys, urllib.parse as u; print(u.parse_qs(u.urlsplit(sys.argv[1]).query)["code"][0])' "${location#* }") \
    || die "no code in $location"
  curl -s -f -H "Authorization: Basic $oidc_basic" --data-urlencode grant_type=authorization_code \
    --data-urlencode "code=$code" --data-urlencode "redirect_uri=$oidc_redirect" "$base/oidc/token" \
    || die "POST /oidc/token refused the code of a real flow"
}

# oidc_seed_codes FIRST COUNT: codes number FIRST … FIRST+COUNT-1 (as bench/oidc_token.lua
# spells them), valid 60 s from now, in the newest session of $admin.
oidc_seed_codes() {
  local first=$1 count=$2
  psql -X -q -v ON_ERROR_STOP=1 "$pg/latchkey" <<SQL
INSERT INTO oidc_codes (code_digest, session_id, app_id, member_id, redirect_uri, scope, nonce,
                        code_challenge, auth_time, amr, expires_at)
SELECT sha256(convert_to('c' || lpad(g::text, 12, '0') || repeat('x', 29) || 'A', 'UTF8')),
       s.id, a.id, s.member_id, '$oidc_redirect', 'openid email profile', NULL,
       NULL, now(), '{otp}', now() + interval '60 seconds'
FROM generate_series($first, $first + $count - 1) AS g,
     (SELECT s.id, s.member_id FROM sessions s JOIN members m ON m.id = s.member_id
      WHERE m.email = '$admin' ORDER BY s.id DESC LIMIT 1) AS s,
     (SELECT id FROM apps WHERE name = 'benchapp') AS a;
ANALYZE oidc_codes;
SQL
}

# The bench() hook of the exchange: fresh codes before the warm-up and before the measured
# run (disjoint numbers), the Lua script's arguments, and the SQL counters reset after the
# warm-up.
oidc_next_code=0
oidc_exchange_hook() {
  local seconds count
  if [ "$1" = warmup ]; then seconds=3; else seconds=${duration%s}; fi
  count=$((seconds * oidc_code_rate))
  count=$((count - count % threads))
  log "seeding $count codes for the exchange's $1 ($oidc_code_rate per second)"
  oidc_seed_codes "$oidc_next_code" "$count"
  script_args=(-- "$oidc_basic" "$oidc_redirect" "$oidc_next_code" "$((count / threads))")
  oidc_next_code=$((oidc_next_code + count))
  if [ "$1" = run ]; then
    oidc_run_started=$(psql -X -At "$pg/latchkey" -c "SELECT now()")
    sql_reset
  fi
}

oidc_sql_hook() {
  if [ "$1" = run ]; then sql_reset; fi
}

# bench_oidc: the two runs, oidc_token_code and oidc_userinfo (after oidc_register, with the
# signed-in $jar); the exchange's answer check goes to $out/oidc-check.tsv.
bench_oidc() {
  local answer access status used
  oidc_code_rate=${BENCH_OIDC_CODE_RATE:-6000}
  # One real flow first: the app, the session and the key ring work, and the ring is loaded.
  answer=$(oidc_code_flow "openid email profile")
  grep -q '"id_token"' <<<"$answer" || die "the real code flow gave no ID token: $answer"

  bench_hook=oidc_exchange_hook
  bench oidc_token_code "$base/oidc/token" -s bench/oidc_token.lua
  bench_hook=
  script_args=()
  sql_per_request oidc_token_code
  # The Lua script's own count of answers with tokens and failed ones (warm-up and run).
  # The codes Latchkey spent from the reset on: the requests still in flight when wrk stopped
  # counting are in the statements too, so the statements per exchange divide by these.
  used=$(psql -X -At "$pg/latchkey" -c "SELECT count(*) FROM oidc_codes WHERE used_at >= '$oidc_run_started'")
  {
    printf 'run\twith_tokens\tfailed\tbeyond_seeded\tspent_by_latchkey\n'
    for f in warmup-oidc_token_code oidc_token_code; do
      sed -n "s/^oidc check: \([0-9]*\) answers with tokens, \([0-9]*\) failed, \([0-9]*\) codes beyond.*/$f\t\1\t\2\t\3/p" "$out/$f.txt"
    done | sed "\$s/\$/\t$used/; 1s/\$/\t-/"
  } > "$out/oidc-check.tsv"

  # Userinfo with an access token of a real flow (10 minutes, longer than the run), after
  # one request has filled the session cache.
  access=$(oidc_code_flow "openid email profile groups" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $access" "$base/oidc/userinfo")
  [ "$status" = 200 ] || die "GET /oidc/userinfo answered $status"
  bench_hook=oidc_sql_hook
  bench oidc_userinfo "$base/oidc/userinfo" -H "Authorization: Bearer $access"
  bench_hook=
  sql_per_request oidc_userinfo
}

# On its own: a private cluster and Latchkey, GET /login as the reference, the two runs.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  # shellcheck source=bench/lib.sh
  . bench/lib.sh

  duration=${BENCH_DURATION:-10s}
  connections=${BENCH_CONNECTIONS:-64}
  threads=${BENCH_THREADS:-2}
  repo=$PWD
  out=$repo/target/bench-oidc
  admin=bench@example.org

  bench_tools curl python3 psql
  bench_latchkey_bin
  rm -rf "$out"
  mkdir -p "$out/mail" "$out/run"
  chmod 755 "$out"
  pids=()
  pgdir=$out/pg
  trap bench_cleanup EXIT

  bench_machine
  bench_start_pg
  bench_start_latchkey
  bench_sign_in
  oidc_register
  bench_results_init

  bench get_login "$base/login"
  bench_oidc

  python3 bench/report.py "$results" "$out/results.md" "$(vm_hwm "$lk_pid")" - - - "$out/sql.tsv"
  log "done: $out/results.md"
fi
