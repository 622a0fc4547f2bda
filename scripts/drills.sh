#!/usr/bin/env bash
# Fault drills against the release binary, with everything real and owned by this script:
# a private PostgreSQL cluster (initdb/pg_ctl, as `postgres` when root; the shared server on
# :5432 is not touched), an SMTP server process (e2e/lib/smtp-sink.mjs) and Latchkey itself.
#
#   a) PostgreSQL stopped for a few seconds and started again under load: 503s while it is
#      down (how fast?), recovery after it is back (how fast?), and no audit row lost for a
#      request that was answered 2xx.
#   b) The SMTP server down: POST /login still 200, `link_send_failed` audited after the
#      retries, and delivery resumes (a retry in flight, and new mail) when it is back.
#   c) Latchkey killed with SIGKILL under load and restarted: signed-in sessions still valid,
#      no audit row lost, the audit chain still verifies.
#
# Results: target/drills/results.md (and results.json, raw load logs); docs/drills.md
# discusses them. Exits non-zero when a target is missed. Takes about two minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

repo=$PWD
out=$repo/target/drills
lk_bin=${LATCHKEY_BIN:-$repo/target/release/latchkey}

for tool in curl python3 psql node npm; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
pg_bin >/dev/null
if [ ! -d e2e/node_modules/smtp-server ]; then
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ -z "${LATCHKEY_BIN:-}" ]; then
  log "building the release binary"
  cargo build --release --locked --bin latchkey
fi

rm -rf "$out"
mkdir -p "$out/mail" "$out/run"
chmod 755 "$out"
now() { date +%s.%N; }
event() { printf '%s %s\n' "$1" "${2:-$(now)}" >> "$out/events.txt"; }

pgdir=$out/pg
lk_pid=
smtp_pid=
load_pid=
cleanup() {
  for pid in "$load_pid" "$lk_pid" "$smtp_pid"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -f "$pgdir/PG_VERSION" ]; then
    pg_private_stop "$pgdir"
    cp "$pgdir/postgres.log" "$out/postgres.log" 2>/dev/null || true
    rm -rf "$pgdir"
  fi
}
trap cleanup EXIT

pg_port=$(free_port)
smtp_port=$(free_port)
lk_port=$(free_port)
base=http://127.0.0.1:$lk_port
db=postgres://postgres@127.0.0.1:$pg_port/latchkey
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
sql() { psql -X -At -v ON_ERROR_STOP=1 "$db" -c "$1"; }

start_smtp() {
  node e2e/lib/smtp-sink.mjs --port "$smtp_port" --dir "$out/mail" >> "$out/smtp.log" 2>&1 &
  smtp_pid=$!
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$smtp_port") 2>/dev/null; do
    (( tries++ < 100 )) || die "the SMTP server did not start; see $out/smtp.log"
    sleep 0.1
  done
}
stop_smtp() {
  kill "$smtp_pid"
  wait "$smtp_pid" 2>/dev/null || true
  smtp_pid=
}

start_latchkey() {
  (
    cd "$out/run"
    exec env -u DATABASE_URL $(env | sed -n 's/^\(LATCHKEY_[A-Z_]*\)=.*/-u \1/p') \
      DATABASE_URL="$db" \
      LATCHKEY_BIND="127.0.0.1:$lk_port" \
      LATCHKEY_SECRET_KEY="$secret" \
      LATCHKEY_ADMINS=drill-admin@example.org \
      LATCHKEY_ALLOWED_DOMAINS=example.org \
      LATCHKEY_EMAIL="smtp://127.0.0.1:$smtp_port?tls=none" \
      LATCHKEY_LOGIN_RATE=1000000/1s \
      LATCHKEY_EMAIL_RATE=1000000/1s \
      RUST_LOG=info \
      "$lk_bin" serve
  ) >> "$out/latchkey.log" 2>&1 &
  lk_pid=$!
  wait_http "$base/readyz" 200 60 || die "latchkey did not become ready; see $out/latchkey.log"
}

log "private PostgreSQL on :$pg_port, SMTP on :$smtp_port, Latchkey on :$lk_port"
pg_private_init "$pgdir"
pg_private_start "$pgdir" "$pg_port"
psql -X -q "postgres://postgres@127.0.0.1:$pg_port/postgres" -c "CREATE DATABASE latchkey"
start_smtp
start_latchkey

log "signing in four members (link by real SMTP, confirmed with curl)"
: > "$out/sessions.txt"
for n in 1 2 3 4; do
  jar=$out/session-$n.jar
  lk_sign_in "$base" "drill-$n@example.org" "$out/mail" "$jar"
  cookie_header "$jar" >> "$out/sessions.txt"
  echo >> "$out/sessions.txt"
done
anon_jar=$out/anon.jar
csrf=$(csrf_of "$base/login" "$anon_jar")
anon_cookie=$(cookie_header "$anon_jar")

load() { # load TAG SECONDS KINDS
  python3 scripts/drills/load.py --base "$base" --tag "$1" --duration "$2" --kinds "$3" \
    --workers 8 --session-cookies "$out/sessions.txt" --browser-cookie "$anon_cookie" \
    --csrf="$csrf" --out "$out/$1_load.jsonl" &
  load_pid=$!
}

# --- a) PostgreSQL restarted under load ----------------------------------------------------
log "a) PostgreSQL stopped for 6 s and started again, under load"
load a 30 login_page,dashboard,post_login
sleep 8
event a_stop_begin
pg_private_stop "$pgdir" "${DRILL_PG_STOP_MODE:-fast}"
event a_stop_done
sleep 6
event a_start_begin
pg_private_start "$pgdir" "$pg_port"
event a_start_done
wait "$load_pid" || true
load_pid=
sql "SELECT email FROM login_audit WHERE event = 'login_denied' AND email LIKE 'a-%'" > "$out/a_audited.txt"

# --- b) SMTP server down ---------------------------------------------------------------------
# Each drill starts from a working Latchkey: if drill a left it broken, that is drill a's
# finding, and b is run on a restarted process.
if [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $(head -1 "$out/sessions.txt")" "$base/")" != 200 ]; then
  log "Latchkey did not recover from drill a; restarting it for drill b"
  echo "b_restarted_latchkey yes" >> "$out/events.txt"
  kill "$lk_pid"
  wait "$lk_pid" 2>/dev/null || true
  start_latchkey
fi
log "b) SMTP server down"
post_login() { # post_login EMAIL -> "status seconds"
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -c "$anon_jar" -b "$anon_jar" \
    --data-urlencode "email=$1" --data-urlencode "csrf_token=$csrf" "$base/login"
}
wait_event() { # wait_event EVENT EMAIL SECONDS: prints the time it was seen
  local start
  start=$(date +%s)
  until [ "$(sql "SELECT count(*) FROM login_audit WHERE event = '$1' AND email = '$2'")" != 0 ]; do
    (( $(date +%s) - start < $3 )) || { echo never; return 0; }
    sleep 0.2
  done
  now
}
stop_smtp
event b_smtp_down
event b1_request
echo "b1_answer $(post_login drill-b1@example.org)" >> "$out/events.txt"
event b1_failed_audited "$(wait_event link_send_failed drill-b1@example.org 90)"
sql "SELECT detail FROM login_audit WHERE event = 'link_send_failed' AND email = 'drill-b1@example.org'" > "$out/b1_detail.txt"
# A mail asked for while the server is down, which comes back 3 s later: a retry delivers it.
event b2_request
echo "b2_answer $(post_login drill-b2@example.org)" >> "$out/events.txt"
sleep 3
start_smtp
event b_smtp_up
event b2_sent_audited "$(wait_event link_sent drill-b2@example.org 60)"
# New mail once it is back.
event b3_request
echo "b3_answer $(post_login drill-b3@example.org)" >> "$out/events.txt"
event b3_sent_audited "$(wait_event link_sent drill-b3@example.org 30)"
for n in 1 2 3; do
  echo "b${n}_mails $(grep -l -i "^To: drill-b$n@example.org" "$out"/mail/*.eml 2>/dev/null | wc -l)" >> "$out/events.txt"
done

# --- c) Latchkey killed with SIGKILL under load ---------------------------------------------
log "c) Latchkey killed with SIGKILL under load, then restarted"
load c 20 dashboard,post_login
sleep 6
event c_kill
kill -KILL "$lk_pid"
wait "$lk_pid" 2>/dev/null || true
start_latchkey
event c_ready
wait "$load_pid" || true
load_pid=
sql "SELECT email FROM login_audit WHERE event = 'login_denied' AND email LIKE 'c-%'" > "$out/c_audited.txt"
n=0
while read -r cookie; do
  [ -n "$cookie" ] || continue
  n=$((n + 1))
  page=$(curl -s -w '\n%{http_code}' -H "Cookie: $cookie" "$base/")
  status=${page##*$'\n'}
  grep -q "drill-$n@example.org" <<<"$page" && shown=yes || shown=no
  echo "c_session_$n $status $shown" >> "$out/events.txt"
done < "$out/sessions.txt"
# The chain must still verify after a crash (when this build has the command).
if "$lk_bin" --help 2>/dev/null | grep -qw audit; then
  verify_status=0
  # The checkpoints are signed with a key derived from the secret: verify needs the same one.
  DATABASE_URL=$db LATCHKEY_SECRET_KEY=$secret "$lk_bin" audit verify > "$out/audit_verify.txt" 2>&1 || verify_status=$?
  echo "audit_verify $verify_status" >> "$out/events.txt"
else
  echo "audit_verify missing" >> "$out/events.txt"
fi

python3 scripts/drills/report.py "$out"
