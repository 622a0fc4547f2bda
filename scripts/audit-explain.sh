#!/usr/bin/env bash
# Query plans of the /audit page on a big login audit.
#
# Creates a scratch database (dropped again on exit) on the PostgreSQL server of $DATABASE_URL,
# or 127.0.0.1:5432 as user postgres; applies migrations/*/up.sql; seeds N rows of plausible
# login_audit data (default 10,000,000); then runs EXPLAIN (ANALYZE, BUFFERS) for the queries
# the audit pages issue, and prints a summary with timings. Full plans go to a log file.
#
#   scripts/audit-explain.sh [N]          e.g. scripts/audit-explain.sh 1000000
#
# AUDIT_EXPLAIN_KEEP=1 keeps the scratch database (its URL is printed) to try other queries or
# indexes on it; drop it by hand afterwards.
#
# The seed is a measurement of query plans, not of the hash chain: the chain trigger is off
# during the bulk insert, and prev_hash/hash are stand-in digests of the right size.
# Needs psql. The connecting user must be allowed to CREATE DATABASE.
set -euo pipefail

ROWS="${1:-10000000}"
if ! [[ "$ROWS" =~ ^[0-9]+$ ]] || [ "$ROWS" -lt 1000 ]; then
  echo "usage: $0 [ROWS]   (ROWS >= 1000, default 10000000)" >&2
  exit 2
fi
command -v psql >/dev/null || { echo "psql is needed (apt-get install postgresql-client)" >&2; exit 1; }
cd "$(dirname "$0")/.."

# The server's URL without its database name (and any ?options kept for later).
url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
options=""
if [[ "$url" == *\?* ]]; then options="?${url#*\?}"; url="${url%%\?*}"; fi
rest="${url#*://}"
if [[ "$rest" == */* ]]; then server="${url%/*}"; else server="$url"; fi
scratch="latchkey_explain_$$"
admin_url="$server/postgres$options"
scratch_url="$server/$scratch$options"
log="${TMPDIR:-/tmp}/audit-explain-$ROWS-$$.txt"

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$admin_url" "$@"; }
psql_scratch() { psql -X -q -v ON_ERROR_STOP=1 "$scratch_url" "$@"; }

cleanup() {
  if [ "${AUDIT_EXPLAIN_KEEP:-}" = 1 ]; then
    echo "kept the scratch database: $scratch_url" >&2
    return
  fi
  psql_admin -c "DROP DATABASE IF EXISTS $scratch WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_admin -c "CREATE DATABASE $scratch" >/dev/null
for up in migrations/*/up.sql; do
  psql_scratch --single-transaction -f "$up" >/dev/null
done

echo "seeding $ROWS login_audit rows into $scratch ..."
seed_started=$(date +%s)
psql_scratch -v rows="$ROWS" <<'SQL'
SET synchronous_commit = off;
SET maintenance_work_mem = '256MB';
-- Build the migration's secondary indexes after the load (same definitions, much faster).
CREATE TABLE explain_saved_indexes AS
  SELECT indexname, indexdef FROM pg_indexes
  WHERE schemaname = 'public' AND tablename = 'login_audit' AND indexname <> 'login_audit_pkey';
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT indexname FROM explain_saved_indexes LOOP EXECUTE format('DROP INDEX %I', r.indexname); END LOOP;
END $$;
ALTER TABLE login_audit DISABLE TRIGGER login_audit_chain_insert;

-- 400 days (the default retention) of a team of 500: sign-in flows of requested -> sent ->
-- signed in, failures, admin actions. Busy members and IPs are much busier than quiet ones
-- (user0 has ~4.5% of the rows, user499 ~0.1%).
INSERT INTO login_audit (id, occurred_at, event, email, ip, user_agent, actor, detail, request_id, prev_hash, hash)
SELECT g,
       date_trunc('microseconds', now() - interval '400 days' + (g::float8 / :rows) * interval '400 days'),
       event,
       CASE WHEN event IN ('link_invalid') THEN NULL
            WHEN event IN ('login_denied') THEN 'stranger' || (r2 * 20000)::int || '@mail.example.com'
            ELSE 'user' || floor(500 * r2 * r2)::int || '@example.org' END,
       (CASE WHEN r5 < 0.02 THEN '2001:db8::' || to_hex((r3 * 2000)::int)
            ELSE '10.' || (floor(4000 * r3 * r3)::int / 250) || '.' || (floor(4000 * r3 * r3)::int % 250) || '.' || (1 + floor(4000 * r3 * r3)::int % 7) END)::inet,
       (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
              'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
              'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
              'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1',
              'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36',
              'Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)'])[1 + floor(r4 * 6)::int],
       CASE WHEN event LIKE 'member_%' THEN (ARRAY['user0@example.org', 'user1@example.org', 'cli'])[1 + floor(r4 * 3)::int] END,
       CASE event
         WHEN 'signed_in' THEN 'via link; requested from 10.0.0.1 (Mozilla/5.0)'
         WHEN 'link_sent' THEN 'sent by smtp'
         WHEN 'code_failed' THEN 'wrong code, try 1 of 5'
         WHEN 'login_denied' THEN 'address may not sign in'
         WHEN 'login_throttled' THEN 'over LATCHKEY_LOGIN_RATE'
         WHEN 'link_prefetched' THEN 'link opened without the asking browser''s cookie'
         WHEN 'member_added' THEN 'role member'
         ELSE '' END,
       CASE WHEN event IN ('link_requested', 'link_sent', 'link_send_failed', 'signed_in', 'link_prefetched',
                           'link_expired', 'link_reused', 'link_wrong_browser', 'code_failed',
                           'approval_mismatch', 'link_cancelled') THEN g / 3 END,
       sha256(int8send(g - 1)),
       sha256(int8send(g))
FROM (
  SELECT g, random() AS r2, random() AS r3, random() AS r4, random() AS r5,
         CASE WHEN r1 < 0.28 THEN 'link_requested'
              WHEN r1 < 0.56 THEN 'link_sent'
              WHEN r1 < 0.81 THEN 'signed_in'
              WHEN r1 < 0.86 THEN 'link_prefetched'
              WHEN r1 < 0.90 THEN 'signed_out'
              WHEN r1 < 0.93 THEN 'session_expired'
              WHEN r1 < 0.95 THEN 'login_denied'
              WHEN r1 < 0.965 THEN 'code_failed'
              WHEN r1 < 0.975 THEN 'link_expired'
              WHEN r1 < 0.983 THEN 'login_throttled'
              WHEN r1 < 0.988 THEN 'link_invalid'
              WHEN r1 < 0.991 THEN 'link_reused'
              WHEN r1 < 0.994 THEN 'link_wrong_browser'
              WHEN r1 < 0.996 THEN 'session_revoked'
              WHEN r1 < 0.997 THEN 'approval_mismatch'
              WHEN r1 < 0.998 THEN 'link_cancelled'
              WHEN r1 < 0.9985 THEN 'link_send_failed'
              WHEN r1 < 0.9992 THEN 'member_added'
              WHEN r1 < 0.9996 THEN 'member_role_changed'
              ELSE 'member_deactivated' END AS event
  FROM (SELECT g, random() AS r1 FROM generate_series(1, :rows) g) numbered
) s;

\o /dev/null
SELECT setval('login_audit_id_seq', :rows);
\o
UPDATE login_audit_chain SET head_hash = sha256(int8send(:rows::bigint)), start_prev_hash = sha256(int8send(0::bigint));
ALTER TABLE login_audit ENABLE TRIGGER login_audit_chain_insert;
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT indexdef FROM explain_saved_indexes LOOP EXECUTE r.indexdef; END LOOP;
END $$;
DROP TABLE explain_saved_indexes;
SQL
psql_scratch -c "VACUUM (ANALYZE) login_audit"
seed_seconds=$(( $(date +%s) - seed_started ))

max_id=$ROWS
page2_before=$((max_id - 50))
deep_before=$((max_id / 2))
today=$(date -u +%F)
day_mid=$(date -u -d '200 days ago' +%F)
day_mid_next=$(date -u -d '199 days ago' +%F)
week_old=$(date -u -d '395 days ago' +%F)
week_old_end=$(date -u -d '388 days ago' +%F)
tomorrow=$(date -u -d 'tomorrow' +%F)
cols="id, occurred_at, event, email, ip, user_agent, actor, detail, request_id, prev_hash, hash"
page="ORDER BY id DESC LIMIT 51"

# label | parameter types | SQL as the page issues it ($n are binds) | the values
queries=(
  "newest 50||SELECT $cols FROM login_audit $page|"
  "older page (before = page 1's last id)|int8|SELECT $cols FROM login_audit WHERE id < \$1 $page|$page2_before"
  "deep page (before = N/2)|int8|SELECT $cols FROM login_audit WHERE id < \$1 $page|$deep_before"
  "email, busy member|text|SELECT $cols FROM login_audit WHERE email = \$1 $page|'user0@example.org'"
  "email, quiet member|text|SELECT $cols FROM login_audit WHERE email = \$1 $page|'user499@example.org'"
  "email, no rows|text|SELECT $cols FROM login_audit WHERE email = \$1 $page|'nobody@example.org'"
  "email + deep before|text,int8|SELECT $cols FROM login_audit WHERE email = \$1 AND id < \$2 $page|'user250@example.org',$deep_before"
  "event, common (signed_in)|text|SELECT $cols FROM login_audit WHERE event = \$1 $page|'signed_in'"
  "event, rare (approval_mismatch)|text|SELECT $cols FROM login_audit WHERE event = \$1 $page|'approval_mismatch'"
  "event + deep before|text,int8|SELECT $cols FROM login_audit WHERE event = \$1 AND id < \$2 $page|'code_failed',$deep_before"
  "ip, busy|inet|SELECT $cols FROM login_audit WHERE ip = \$1 $page|'10.0.0.1'"
  "ip, rare (IPv6)|inet|SELECT $cols FROM login_audit WHERE ip = \$1 $page|'2001:db8::1'"
  "dates: today|timestamptz,timestamptz|SELECT $cols FROM login_audit WHERE occurred_at >= \$1 AND occurred_at < \$2 $page|'$today','$tomorrow'"
  "dates: one day 200 days ago|timestamptz,timestamptz|SELECT $cols FROM login_audit WHERE occurred_at >= \$1 AND occurred_at < \$2 $page|'$day_mid','$day_mid_next'"
  "dates: a week 395 days ago|timestamptz,timestamptz|SELECT $cols FROM login_audit WHERE occurred_at >= \$1 AND occurred_at < \$2 $page|'$week_old','$week_old_end'"
  "from only, 200 days ago|timestamptz|SELECT $cols FROM login_audit WHERE occurred_at >= \$1 $page|'$day_mid'"
  "to only, 200 days ago|timestamptz|SELECT $cols FROM login_audit WHERE occurred_at < \$1 $page|'$day_mid_next'"
  "email + dates 200 days ago|text,timestamptz,timestamptz|SELECT $cols FROM login_audit WHERE email = \$1 AND occurred_at >= \$2 AND occurred_at < \$3 $page|'user250@example.org','$day_mid','$day_mid_next'"
  "event + dates 200 days ago|text,timestamptz,timestamptz|SELECT $cols FROM login_audit WHERE event = \$1 AND occurred_at >= \$2 AND occurred_at < \$3 $page|'login_denied','$day_mid','$day_mid_next'"
  "email + event|text,text|SELECT $cols FROM login_audit WHERE email = \$1 AND event = \$2 $page|'user250@example.org','code_failed'"
  "request (sign-in request id)|int8|SELECT $cols FROM login_audit WHERE request_id = \$1 $page|$((max_id / 6))"
  "page's link_requested rows (50 ids)|int8[]|SELECT $cols FROM login_audit WHERE event = 'link_requested' AND request_id = ANY(\$1) ORDER BY id|'{$(seq -s, $((max_id / 3 - 49)) $((max_id / 3)))}'"
  "dashboard: failures in 24h|text[],timestamptz|SELECT count(*) FROM login_audit WHERE event = ANY(\$1) AND occurred_at >= \$2|'{link_invalid,link_expired,link_reused,link_wrong_browser,code_failed,approval_mismatch,login_denied,login_throttled}','$(date -u -d '24 hours ago' '+%F %T')+00'"
)

# Runs one query three times with the planner's custom plan and three times with the generic
# plan PostgreSQL switches to for a prepared statement (diesel caches prepared statements).
explain() {
  local label="$1" types="$2" sql="$3" args="$4"
  local params=""
  [ -n "$args" ] && params="($args)"
  {
    echo "SET plan_cache_mode = force_custom_plan;"
    if [ -n "$types" ]; then echo "PREPARE q($types) AS $sql;"; else echo "PREPARE q AS $sql;"; fi
    for _ in 1 2 3; do echo "EXPLAIN (ANALYZE, BUFFERS) EXECUTE q$params;"; done
    echo "SET plan_cache_mode = force_generic_plan;"
    for _ in 1 2 3; do echo "EXPLAIN (ANALYZE, BUFFERS) EXECUTE q$params;"; done
  } | psql_scratch -At
}

# The scan that reads the table in the k-th plan of the output, plus a sort if there is one.
describe_plan() {
  local plan
  plan=$(awk -v k="$1" 'n == k - 1 {print} /Execution Time/ {n++}' <<<"$2")
  local scan
  scan=$(grep -m1 -oE '(Parallel )?(Index Only Scan Backward|Index Only Scan|Index Scan Backward|Index Scan|Bitmap Index Scan|Seq Scan)( using [a-z_]+| on [a-z_]+)?' <<<"$plan" || true)
  grep -qE -- '-> +(Incremental )?Sort|^(Incremental )?Sort' <<<"$plan" && scan="$scan + sort"
  grep -q 'Gather' <<<"$plan" && scan="$scan (parallel)"
  echo "$scan"
}

{
  echo "rows: $ROWS   seeded in ${seed_seconds}s"
  echo "machine: $(nproc) cores ($(uname -m)), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
  echo "server: $(psql_scratch -At -c 'SELECT version()')"
  echo "settings: $(psql_scratch -At -c "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers','work_mem','effective_cache_size','random_page_cost','max_parallel_workers_per_gather')")"
  echo "table: $(psql_scratch -At -c "SELECT pg_size_pretty(pg_table_size('login_audit')) || ' heap, ' || pg_size_pretty(pg_indexes_size('login_audit')) || ' indexes'")"
  echo
  echo "indexes on login_audit:"
  psql_scratch -At -F ' ' -c "SELECT '  ' || pg_size_pretty(pg_relation_size(indexrelid::regclass)) || '  ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'login_audit'::regclass ORDER BY 1"
  echo
} | tee "$log"

summary=()
printf '%-40s %11s %11s %11s  %s\n' "query" "first ms" "best ms" "generic ms" "plan (custom)" | tee -a "$log"
for entry in "${queries[@]}"; do
  IFS='|' read -r label types sql args <<<"$entry"
  out=$(explain "$label" "$types" "$sql" "$args")
  { echo "=== $label"; echo "$sql"; echo "-- $args"; echo "$out"; echo; } >>"$log.plans"
  mapfile -t times < <(grep -o 'Execution Time: [0-9.]*' <<<"$out" | awk '{print $3}')
  first="${times[0]}"
  best=$(printf '%s\n' "${times[@]:0:3}" | sort -g | head -1)
  generic=$(printf '%s\n' "${times[@]:3:3}" | sort -g | head -1)
  custom=$(describe_plan 1 "$out")
  generic_plan=$(describe_plan 4 "$out")
  [ "$generic_plan" != "$custom" ] && custom="$custom; generic: $generic_plan"
  line=$(printf '%-40s %11s %11s %11s  %s' "$label" "$first" "$best" "$generic" "$custom")
  echo "$line" | tee -a "$log"
done
cat "$log.plans" >>"$log"
rm -f "$log.plans"
echo
echo "full plans: $log"
