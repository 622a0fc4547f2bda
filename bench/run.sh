#!/usr/bin/env bash
# Latchkey's benchmarks, run once on loopback (never part of the tests):
#   - GET /login, a signed-in GET /, POST /login (limits raised), GET /audit filtered on a
#     login_audit table seeded with 1 million rows: req/s, p50/p99 latency (wrk), and the peak
#     RSS of the latchkey process (VmHWM);
#   - GET /auth/check for a signed-in member whose app admits them (forward auth: 200 with the
#     identity headers and a signed assertion), next to the bare actix-web reference;
#   - an app (nginx `return 200`) behind nginx, Caddy and Traefik with the configuration
#     `latchkey apps proxy-config` prints, against the same app through the same proxy
#     unprotected (bench/proxies.sh), with the SQL Latchkey ran per protected request;
#   - the SQL statements PostgreSQL ran (pg_stat_statements) during the signed-in GET / and
#     GET /auth/check runs, per request: the session cache should make it zero;
#   - the references in the same run: `pgbench -S` (simple and `-M prepared` protocol) on the
#     same PostgreSQL at the same concurrency, and a bare actix-web handler (bench/bare) for
#     GET /login.
# PostgreSQL is a private cluster started by this script (initdb/pg_ctl, as `postgres` when
# root), so the shared server on :5432 is neither disturbed nor disturbing.
# Results: target/bench/results.md (+ raw wrk/pgbench output); BENCHMARKS.md discusses them.
#
# Settings: BENCH_DURATION (15s), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
#           BENCH_AUDIT_ROWS (1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

duration=${BENCH_DURATION:-15s}
connections=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
audit_rows=${BENCH_AUDIT_ROWS:-1000000}
repo=$PWD
out=$repo/target/bench
admin=bench@example.org

for tool in curl python3 psql pgbench; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y curl python3 postgresql-client postgresql-contrib)"
done
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q wrk; else die "wrk is missing: apt-get install -y wrk"; fi
fi

log "building the release binaries"
cargo build --release --locked --bin latchkey
cargo build --release --locked --manifest-path bench/bare/Cargo.toml --target-dir bench/bare/target

rm -rf "$out"
mkdir -p "$out/mail" "$out/run" "$out/pgbench"
chmod 755 "$out" "$out/pgbench"

pids=()
pgdir=$out/pg
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -f "$pgdir/PG_VERSION" ]; then
    pg_private_stop "$pgdir"
    cp "$pgdir/postgres.log" "$out/postgres.log" 2>/dev/null || true
    rm -rf "$pgdir"
  fi
}
trap cleanup EXIT

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "ram: $(free -h | awk '/^Mem:/ { print $2 }')"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "latchkey: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src templates 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "postgresql: $("$(pg_bin)/postgres" --version)"
  echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
  echo "pgbench: $(pgbench --version)"
} > "$out/machine.txt"
cat "$out/machine.txt" >&2

log "starting a private PostgreSQL"
pg_port=$(free_port)
pg_private_init "$pgdir"
pg_private_start "$pgdir" "$pg_port" "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
pg=postgres://postgres@127.0.0.1:$pg_port
psql -X -q "$pg/postgres" -c "CREATE DATABASE latchkey" -c "CREATE DATABASE pgbench"
psql -X -q "$pg/latchkey" -c "CREATE EXTENSION pg_stat_statements"
echo "postgresql settings: $(psql -X -At "$pg/postgres" -c "SELECT string_agg(name || '=' || current_setting(name), ' ') FROM pg_settings WHERE name IN ('max_connections', 'shared_buffers', 'fsync', 'synchronous_commit')")" >> "$out/machine.txt"

lk_port=$(free_port)
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
base=http://127.0.0.1:$lk_port
log "starting latchkey on $base"
(
  cd "$out/run"
  exec env -u DATABASE_URL $(env | sed -n 's/^\(LATCHKEY_[A-Z_]*\)=.*/-u \1/p') \
    DATABASE_URL="$pg/latchkey" \
    LATCHKEY_BIND="127.0.0.1:$lk_port" \
    LATCHKEY_SECRET_KEY="$secret" \
    LATCHKEY_ADMINS="$admin" \
    LATCHKEY_EMAIL="file:$out/mail" \
    LATCHKEY_LOGIN_RATE=1000000/1s \
    LATCHKEY_EMAIL_RATE=1000000/1s \
    RUST_LOG=info \
    "$repo/target/release/latchkey" serve
) > "$out/latchkey.log" 2>&1 &
lk_pid=$!
pids+=("$lk_pid")
wait_http "$base/readyz" 200 60 || die "latchkey did not start; see $out/latchkey.log"

log "signing in once (link from the .eml, confirmed with curl)"
jar=$out/cookies.txt
lk_sign_in "$base" "$admin" "$out/mail" "$jar"
cookie=$(cookie_header "$jar")
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$base/")" = 200 ] || die "signed-in GET / is not 200"

# The apps, registered with the real command line before the audit is seeded: the seeded rows
# carry no real chain, and the command line refuses to sign a checkpoint over them.
# shellcheck source=bench/proxies.sh
. bench/proxies.sh
lk_cli apps add wiki https://wiki.bench.test --roles admin,member > /dev/null
register_proxy_apps

log "seeding login_audit with $audit_rows rows (chain trigger off for the bulk load)"
seed_started=$(date +%s)
psql -X -q -v ON_ERROR_STOP=1 "$pg/latchkey" <<SQL
ALTER TABLE login_audit DISABLE TRIGGER login_audit_chain_insert;
INSERT INTO login_audit (id, seq, occurred_at, event, email, ip, user_agent, actor, detail, request_id, prev_hash, hash)
SELECT nextval('login_audit_id_seq'), (SELECT coalesce(max(seq), 0) FROM login_audit) + g,
       now() - make_interval(secs => ($audit_rows - g) * 30),
       (ARRAY['link_requested','link_sent','signed_in','signed_out','link_prefetched','login_denied','session_expired','link_expired'])[1 + g % 8],
       'user' || (g % 500) || '@example.org',
       ('10.' || (g % 7) || '.' || (g % 250) || '.' || (g % 199))::inet,
       'Mozilla/5.0 (X11; Linux x86_64) Bench/' || (g % 40),
       NULL, 'seeded', g / 3,
       '\x00'::bytea, sha256(int8send(g))
FROM generate_series(1, $audit_rows) AS g;
ALTER TABLE login_audit ENABLE TRIGGER login_audit_chain_insert;
-- Rows written after the load continue the numbering (the chain's hashes are not kept).
UPDATE login_audit_chain SET head_seq = (SELECT max(seq) FROM login_audit);
ANALYZE login_audit;
SQL
echo "audit seed: $audit_rows rows in $(( $(date +%s) - seed_started )) s" >> "$out/machine.txt"

# wrk_summary FILE: "req/s p50_ms p99_ms requests non_2xx_3xx" from `wrk --latency` output.
wrk_summary() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
      return v
    }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /requests in/ { n = $1 } /Non-2xx or 3xx/ { bad = $5 } /^Requests\/sec/ { rps = $2 }
    END { printf "%.0f %.2f %.2f %d %d\n", rps, p50, p99, n, bad }' "$1"
}

results=$out/results.tsv
printf 'name\treq_s\tp50_ms\tp99_ms\trequests\tnon_2xx_3xx\tlatchkey_vmhwm_kb\tloadavg\n' > "$results"

# bench NAME URL [wrk options...]: a short warm-up, then the measured run. The array
# script_args, when set, goes after the URL (arguments for a wrk Lua script).
script_args=()
bench() {
  local name=$1 url=$2
  shift 2
  log "wrk: $name ($connections connections, $duration)"
  wrk -t"$threads" -c"$connections" -d3s "$@" "$url" "${script_args[@]}" > /dev/null
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  wrk -t"$threads" -c"$connections" -d"$duration" --latency "$@" "$url" "${script_args[@]}" > "$out/$name.txt"
  read -r rps p50 p99 n bad < <(wrk_summary "$out/$name.txt")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" "$n" "$bad" "$(vm_hwm "$lk_pid")" "$load" >> "$results"
}

log "bare actix-web reference"
bare_port=$(free_port)
login_bytes=$(curl -s "$base/login" | wc -c)
bench/bare/target/release/latchkey-bench-bare "127.0.0.1:$bare_port" "$login_bytes" > "$out/bare.log" 2>&1 &
bare_pid=$!
pids+=("$bare_pid")
wait_http "http://127.0.0.1:$bare_port/" 200 20 || die "the bare server did not start"
bench bare_actix_get "http://127.0.0.1:$bare_port/"
bare_hwm=$(vm_hwm "$bare_pid")
kill "$bare_pid"

# sql_per_request NAME: the statements the latchkey database ran since the last reset, per
# request of the run NAME (everything counts: the listener's heartbeat, the dashboard's
# few-seconds numbers, the sweeper), and the busiest statements, into $out/sql-NAME.txt.
sql_reset() { psql -X -q -At "$pg/latchkey" -c "SELECT pg_stat_statements_reset()" > /dev/null; }
sql_per_request() {
  local name=$1 requests calls
  requests=$(awk -F'\t' -v n="$name" '$1 == n { print $5 }' "$results")
  psql -X -At -F $'\t' "$pg/latchkey" -c "SELECT calls, left(regexp_replace(query, '\s+', ' ', 'g'), 100) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'latchkey') AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC LIMIT 8" > "$out/sql-$name.txt"
  calls=$(awk -F'\t' '{ s += $1 } END { print s + 0 }' "$out/sql-$name.txt")
  printf '%s\t%s\t%s\n' "$name" "$calls" "$requests" >> "$out/sql.tsv"
}
: > "$out/sql.tsv"

bench get_login "$base/login"
# Fill the session cache (and the dashboard's numbers) before counting.
curl -s -o /dev/null -H "Cookie: $cookie" "$base/"
sql_reset
bench get_dashboard_signed_in "$base/" -H "Cookie: $cookie"
sql_per_request get_dashboard_signed_in
# Forward auth: the proxy's subrequest for a page of a registered app, with the app's own
# cookie forwarded. One app registered with the real command line, opened once through
# /auth/app and its callback (which records app_opened); every check after that only reads.
app_cookie=$(lk_open_app "$base" "$jar" wiki https://wiki.bench.test)
check_headers=(-H "Cookie: $app_cookie" -H "X-Latchkey-App: wiki" -H "X-Original-URL: https://wiki.bench.test/page")
[ "$(curl -s -o /dev/null -w '%{http_code}' "${check_headers[@]}" "$base/auth/check")" = 200 ] || die "GET /auth/check is not 200"
sql_reset
bench get_auth_check_signed_in "$base/auth/check" "${check_headers[@]}"
sql_per_request get_auth_check_signed_in

# The same check through each real proxy, as printed, against the app unprotected.
bench_proxies

bench get_audit_by_email "$base/audit?email=user42%40example.org" -H "Cookie: $cookie"
bench get_audit_by_event "$base/audit?event=signed_in" -H "Cookie: $cookie"
bench get_audit_by_day "$base/audit?from=$(date -u -d '-100 days' +%F)&to=$(date -u -d '-100 days' +%F)" -H "Cookie: $cookie"

# POST /login from one browser (its cookie and CSRF token), for a member: every request
# creates a sign-in request, writes link_requested and queues a mail.
anon_jar=$out/anon-cookies.txt
csrf=$(csrf_of "$base/login" "$anon_jar")
audit_before=$(psql -X -At "$pg/latchkey" -c "SELECT max(id) FROM login_audit")
script_args=(-- "$(cookie_header "$anon_jar")" "$csrf" "$admin")
bench post_login "$base/login" -s bench/post_login.lua
script_args=()
sleep 5 # let the mail worker settle
psql -X -At -F ' ' "$pg/latchkey" -c "SELECT event, count(*) FROM login_audit WHERE id > $audit_before GROUP BY event ORDER BY event" > "$out/post_login_audit.txt"

log "pgbench -S reference (same PostgreSQL, $connections clients)"
pgbench -i -s 10 -q "$pg/pgbench" > "$out/pgbench-init.txt" 2>&1
pgbench -S -n -c "$connections" -j "$threads" -T 3 "$pg/pgbench" > /dev/null 2>&1
load=$(cut -d' ' -f1 /proc/loadavg)
(cd "$out/pgbench" && pgbench -S -n -c "$connections" -j "$threads" -T "${duration%s}" -l --log-prefix=pgbench "$pg/pgbench") > "$out/pgbench.txt" 2>&1
pg_tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out/pgbench.txt" | tail -1)
read -r pg_n pg_p50 pg_p99 < <(cat "$out"/pgbench/pgbench.* | awk '{ print $3 }' | sort -n | awk '
  { v[NR] = $1 } END { printf "%d %.2f %.2f\n", NR, v[int(NR * 0.50)] / 1000, v[int(NR * 0.99)] / 1000 }')
printf 'pgbench_select_only\t%.0f\t%s\t%s\t%s\t0\t-\t%s\n' "$pg_tps" "$pg_p50" "$pg_p99" "$pg_n" "$load" >> "$results"
rm -rf "$out/pgbench"
mkdir -p "$out/pgbench"
chmod 755 "$out/pgbench"
pgbench -S -M prepared -n -c "$connections" -j "$threads" -T 3 "$pg/pgbench" > /dev/null 2>&1
load=$(cut -d' ' -f1 /proc/loadavg)
(cd "$out/pgbench" && pgbench -S -M prepared -n -c "$connections" -j "$threads" -T "${duration%s}" -l --log-prefix=pgbench "$pg/pgbench") > "$out/pgbench-prepared.txt" 2>&1
pg_tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out/pgbench-prepared.txt" | tail -1)
read -r pg_n pg_p50 pg_p99 < <(cat "$out"/pgbench/pgbench.* | awk '{ print $3 }' | sort -n | awk '
  { v[NR] = $1 } END { printf "%d %.2f %.2f\n", NR, v[int(NR * 0.50)] / 1000, v[int(NR * 0.99)] / 1000 }')
printf 'pgbench_select_only_prepared\t%.0f\t%s\t%s\t%s\t0\t-\t%s\n' "$pg_tps" "$pg_p50" "$pg_p99" "$pg_n" "$load" >> "$results"
rm -rf "$out/pgbench"

final_hwm=$(vm_hwm "$lk_pid")
mails=$(find "$out/mail" -name '*.eml' | wc -l)
rm -rf "$out/mail"

python3 bench/report.py "$results" "$out/results.md" "$final_hwm" "$bare_hwm" "$out/post_login_audit.txt" "$mails" "$out/sql.tsv"
log "done: $out/results.md"
