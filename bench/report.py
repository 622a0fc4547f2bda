#!/usr/bin/env python3
"""The results table of bench/run.sh, with the targets of BENCHMARKS.md checked.

Usage: report.py RESULTS.tsv OUT.md LATCHKEY_VMHWM_KB BARE_VMHWM_KB POST_LOGIN_AUDIT.txt MAILS SQL.tsv

bench/oidc.sh, run on its own, passes `-` for BARE_VMHWM_KB, POST_LOGIN_AUDIT.txt and MAILS:
the targets whose runs are missing are left out. The OpenID Connect targets are checked when
its runs are there; the exit status is 1 when an exchange (or a userinfo request) failed, since
the rate of a run with failed answers means nothing.
"""

import csv
import os
import sys

tsv, md, hwm, bare_hwm, audit_file, mails, sql_file = sys.argv[1:8]
rows = {r["name"]: r for r in csv.DictReader(open(tsv), delimiter="\t")}
# name -> (statements PostgreSQL ran during the run, requests of the run)
sql = {}
for line in open(sql_file):
    name, calls, requests = line.split("\t")
    sql[name] = (int(calls), int(requests))


def rps(name):
    return float(rows[name]["req_s"])


def verdict(ok):
    return "met" if ok else "MISSED"


lines = [
    "| run | req/s | p50 ms | p99 ms | requests | non-2xx/3xx | latchkey VmHWM after (MB) | load avg before |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]
for r in rows.values():
    peak = r["latchkey_vmhwm_kb"]
    peak = f"{int(peak) / 1024:.1f}" if peak.isdigit() else "-"
    lines.append(
        f"| {r['name']} | {r['req_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['requests']} "
        f"| {r['non_2xx_3xx']} | {peak} | {r['loadavg']} | {r.get('latchkey_cpu_us') or '-'} "
        f"| {r.get('postgres_cpu_us') or '-'} | {r.get('wrk_cpu_us') or '-'} | {r.get('others_cpu_pct') or '-'} "
        f"| {r.get('socket_errors') or '0'} |"
    )
lines[0] += (" latchkey CPU µs/request | PostgreSQL CPU µs/request | wrk CPU µs/request "
             "| others' CPU, % of the machine | socket errors |")
lines[1] += "---:|---:|---:|---:|---:|"

login = rps("get_login")
peak = int(hwm) / 1024
lines += ["", "| target | measured | |", "|---|---|---|"]
if "get_dashboard_signed_in" in rows:
    signed_in = rps("get_dashboard_signed_in") / login
    lines.append(f"| signed-in GET / >= 60% of GET /login | {signed_in:.0%} | {verdict(signed_in >= 0.60)} |")
if "get_auth_check_signed_in" in rows:
    check = rps("get_auth_check_signed_in") / login
    lines.append(f"| signed-in GET /auth/check >= 60% of GET /login | {check:.0%} | {verdict(check >= 0.60)} |")
if "bare_actix_get" in rows:
    login_bare = login / rps("bare_actix_get")
    lines.append(f"| GET /login >= 50% of bare actix-web | {login_bare:.0%} | {verdict(login_bare >= 0.50)} |")
for name, (calls, requests) in sql.items():
    per = calls / requests if requests else float("nan")
    if name == "oidc_token_code":
        # The exchange writes (the code spent, the access token stored): reported, no target.
        # Divided by the codes Latchkey spent after the reset (the requests in flight when wrk
        # stopped counting ran their statements too), when bench/oidc.sh counted them.
        check_file = os.path.join(os.path.dirname(sql_file), "oidc-check.tsv")
        spent = None
        if os.path.exists(check_file):
            for c in csv.DictReader(open(check_file), delimiter="\t"):
                if c["run"] == name and c.get("spent_by_latchkey", "-").isdigit():
                    spent = int(c["spent_by_latchkey"])
        if spent:
            lines.append(f"| (no target) SQL statements per code exchange | {calls} in {spent} exchanges "
                         f"(codes spent) = {calls / spent:.2f} | |")
        else:
            lines.append(f"| (no target) SQL statements per code exchange | {calls} in {requests} = {per:.2f} | |")
        continue
    # Background statements (the listener's heartbeat, the dashboard's numbers every few
    # seconds) are counted too; a cached request itself runs none.
    lines.append(
        f"| SQL statements per cached request: {name} | {calls} in {requests} requests "
        f"= {per:.5f} | {verdict(per < 0.001)} |"
    )
for name, r in rows.items():
    if name in ("get_login", "get_dashboard_signed_in", "get_auth_check_signed_in", "oidc_userinfo"):
        p99 = float(r["p99_ms"])
        lines.append(f"| p99 < 10 ms at 64 connections: {name} | {p99:.2f} ms | {verdict(p99 < 10)} |")
# Issue #22: an app behind each proxy, protected as printed, against the same app through the
# same proxy unprotected.
for kind in ("nginx", "caddy", "traefik") if "bare_actix_get" in rows else ():
    protected, unprotected = f"{kind}_protected", f"{kind}_unprotected"
    if protected not in rows or unprotected not in rows:
        lines.append(f"| {kind}: protected >= 45% of unprotected | not run | MISSED |")
        continue
    ratio = rps(protected) / rps(unprotected)
    p99 = float(rows[protected]["p99_ms"])
    lines.append(
        f"| {kind}: protected >= 45% of unprotected | {rps(protected):.0f} / {rps(unprotected):.0f} "
        f"= {ratio:.0%} | {verdict(ratio >= 0.45)} |"
    )
    lines.append(f"| {kind}: protected p99 < 15 ms | {p99:.2f} ms | {verdict(p99 < 15)} |")
# Issue #24: OpenID Connect. Every exchange must have answered 200 with tokens (wrk's
# non-2xx count, its socket errors, and the Lua script's own check of each answer).
failed_runs = []
if "oidc_token_code" in rows:
    r = rows["oidc_token_code"]
    checks = {}
    check_file = os.path.join(os.path.dirname(sql_file), "oidc-check.tsv")
    if os.path.exists(check_file):
        checks = {c["run"]: c for c in csv.DictReader(open(check_file), delimiter="\t")}
    run_check = checks.get("oidc_token_code", {})
    failed = int(r["non_2xx_3xx"]) + int(r.get("socket_errors") or 0) + int(run_check.get("failed") or 0)
    with_tokens = run_check.get("with_tokens", "?")
    if failed or not run_check:
        failed_runs.append("oidc_token_code")
    exchange = rps("oidc_token_code")
    lines += [
        f"| every code exchange answered 200 with tokens | {with_tokens} with tokens, {r['non_2xx_3xx']} non-2xx, "
        f"{r.get('socket_errors') or 0} socket errors, {run_check.get('failed', '?')} failed by the script's check "
        f"| {verdict(not failed and bool(run_check))} |",
        f"| code exchange >= 1,000/s | {exchange:,.0f}/s (p50 {float(r['p50_ms']):.2f} ms, p99 {float(r['p99_ms']):.2f} ms) "
        f"| {verdict(exchange >= 1000 and not failed)} |",
    ]
if "oidc_userinfo" in rows:
    r = rows["oidc_userinfo"]
    bad = int(r["non_2xx_3xx"]) + int(r.get("socket_errors") or 0)
    if bad:
        failed_runs.append("oidc_userinfo")
    ratio = rps("oidc_userinfo") / login
    lines.append(
        f"| GET /oidc/userinfo >= 60% of GET /login | {rps('oidc_userinfo'):.0f} / {login:.0f} = {ratio:.0%}"
        f"{f' ({bad} failed)' if bad else ''} | {verdict(ratio >= 0.60 and not bad)} |"
    )
lines += [f"| latchkey peak RSS (VmHWM) < 64 MB | {peak:.1f} MB | {verdict(peak < 64)} |"]
if bare_hwm != "-":
    lines += ["", f"bare actix-web peak RSS: {int(bare_hwm) / 1024:.1f} MB"]
if audit_file != "-":
    lines += [
        "",
        "audit rows written during POST /login (event count): "
        + ", ".join(line for line in open(audit_file).read().split("\n") if line),
        f"mails written by the file backend during the run: {mails}",
    ]
for name in sql:
    lines += ["", f"statements during {name} (calls, query):", ""]
    path = os.path.join(os.path.dirname(sql_file), f"sql-{name}.txt")
    lines += [f"    {line.rstrip()}" for line in open(path) if line.strip()] or ["    (none)"]
if failed_runs:
    lines += ["", f"FAILED: answers that were not a success in {', '.join(failed_runs)}: their rates mean nothing"]
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if failed_runs else 0)
