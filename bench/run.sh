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
#   - OpenID Connect (bench/oidc.sh): the code exchange (POST /oidc/token, confidential client,
#     client_secret_basic, codes seeded in oidc_codes) and GET /oidc/userinfo with a bearer
#     token, with the SQL statements per exchange;
#   - the SQL statements PostgreSQL ran (pg_stat_statements) during the signed-in GET /,
#     GET /auth/check and userinfo runs, per request: the session cache should make it zero;
#   - the CPU time the latchkey process and the PostgreSQL cluster spent per request (/proc);
#   - the references in the same run: `pgbench -S` (simple and `-M prepared` protocol) on the
#     same PostgreSQL at the same concurrency, and a bare actix-web handler (bench/bare) for
#     GET /login.
# PostgreSQL is a private cluster started by this script (initdb/pg_ctl, as `postgres` when
# root), so the shared server on :5432 is neither disturbed nor disturbing.
# Results: target/bench/results.md (+ raw wrk/pgbench output); BENCHMARKS.md discusses them.
#
# Settings: BENCH_DURATION (15s), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
#           BENCH_AUDIT_ROWS (1000000), BENCH_OIDC_CODE_RATE (6000, codes seeded per second
#           of exchange run), LATCHKEY_BIN (a latchkey binary to measure instead of building
#           one; the bare reference is still built).
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

bench_tools curl python3 psql pgbench
bench_latchkey_bin
log "building the bare actix-web reference"
cargo build --release --locked --manifest-path bench/bare/Cargo.toml --target-dir bench/bare/target

rm -rf "$out"
mkdir -p "$out/mail" "$out/run" "$out/pgbench"
chmod 755 "$out" "$out/pgbench"

pids=()
pgdir=$out/pg
trap bench_cleanup EXIT

bench_machine
bench_start_pg
psql -X -q "$pg/postgres" -c "CREATE DATABASE pgbench"
bench_start_latchkey
bench_sign_in

# The apps, registered with the real command line before the audit is seeded: the seeded rows
# carry no real chain, and the command line refuses to sign a checkpoint over them.
# shellcheck source=bench/proxies.sh
. bench/proxies.sh
# shellcheck source=bench/oidc.sh
. bench/oidc.sh
lk_cli apps add wiki https://wiki.bench.test --roles admin,member > /dev/null
register_proxy_apps
oidc_register

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

bench_results_init

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

# OpenID Connect (issue #24): the code exchange and userinfo (bench/oidc.sh).
bench_oidc

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
printf 'pgbench_select_only\t%.0f\t%s\t%s\t%s\t0\t-\t%s\t-\t-\t0\t-\t-\n' "$pg_tps" "$pg_p50" "$pg_p99" "$pg_n" "$load" >> "$results"
rm -rf "$out/pgbench"
mkdir -p "$out/pgbench"
chmod 755 "$out/pgbench"
pgbench -S -M prepared -n -c "$connections" -j "$threads" -T 3 "$pg/pgbench" > /dev/null 2>&1
load=$(cut -d' ' -f1 /proc/loadavg)
(cd "$out/pgbench" && pgbench -S -M prepared -n -c "$connections" -j "$threads" -T "${duration%s}" -l --log-prefix=pgbench "$pg/pgbench") > "$out/pgbench-prepared.txt" 2>&1
pg_tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out/pgbench-prepared.txt" | tail -1)
read -r pg_n pg_p50 pg_p99 < <(cat "$out"/pgbench/pgbench.* | awk '{ print $3 }' | sort -n | awk '
  { v[NR] = $1 } END { printf "%d %.2f %.2f\n", NR, v[int(NR * 0.50)] / 1000, v[int(NR * 0.99)] / 1000 }')
printf 'pgbench_select_only_prepared\t%.0f\t%s\t%s\t%s\t0\t-\t%s\t-\t-\t0\t-\t-\n' "$pg_tps" "$pg_p50" "$pg_p99" "$pg_n" "$load" >> "$results"
rm -rf "$out/pgbench"

final_hwm=$(vm_hwm "$lk_pid")
mails=$(find "$out/mail" -name '*.eml' | wc -l)
rm -rf "$out/mail"

python3 bench/report.py "$results" "$out/results.md" "$final_hwm" "$bare_hwm" "$out/post_login_audit.txt" "$mails" "$out/sql.tsv"
log "done: $out/results.md"
