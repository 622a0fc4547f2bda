#!/usr/bin/env python3
"""The results table of bench/run.sh, with the targets of BENCHMARKS.md checked.

Usage: report.py RESULTS.tsv OUT.md LATCHKEY_VMHWM_KB BARE_VMHWM_KB POST_LOGIN_AUDIT.txt MAILS SQL.tsv
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
        f"| {r['non_2xx_3xx']} | {peak} | {r['loadavg']} |"
    )

login = rps("get_login")
signed_in = rps("get_dashboard_signed_in") / login
check = rps("get_auth_check_signed_in") / login
login_bare = login / rps("bare_actix_get")
peak = int(hwm) / 1024
lines += [
    "",
    "| target | measured | |",
    "|---|---|---|",
    f"| signed-in GET / >= 60% of GET /login | {signed_in:.0%} | {verdict(signed_in >= 0.60)} |",
    f"| signed-in GET /auth/check >= 60% of GET /login | {check:.0%} | {verdict(check >= 0.60)} |",
    f"| GET /login >= 50% of bare actix-web | {login_bare:.0%} | {verdict(login_bare >= 0.50)} |",
]
for name, (calls, requests) in sql.items():
    per = calls / requests if requests else float("nan")
    # Background statements (the listener's heartbeat, the dashboard's numbers every few
    # seconds) are counted too; a cached request itself runs none.
    lines.append(
        f"| SQL statements per cached request: {name} | {calls} in {requests} requests "
        f"= {per:.5f} | {verdict(per < 0.001)} |"
    )
for name, r in rows.items():
    if name in ("get_login", "get_dashboard_signed_in", "get_auth_check_signed_in"):
        p99 = float(r["p99_ms"])
        lines.append(f"| p99 < 10 ms at 64 connections: {name} | {p99:.2f} ms | {verdict(p99 < 10)} |")
# Issue #22: an app behind each proxy, protected as printed, against the same app through the
# same proxy unprotected.
for kind in ("nginx", "caddy", "traefik"):
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
lines += [
    f"| latchkey peak RSS (VmHWM) < 64 MB | {peak:.1f} MB | {verdict(peak < 64)} |",
    "",
    f"bare actix-web peak RSS: {int(bare_hwm) / 1024:.1f} MB",
    "",
    "audit rows written during POST /login (event count): "
    + ", ".join(line for line in open(audit_file).read().split("\n") if line),
    f"mails written by the file backend during the run: {mails}",
]
for name in sql:
    lines += ["", f"statements during {name} (calls, query):", ""]
    path = os.path.join(os.path.dirname(sql_file), f"sql-{name}.txt")
    lines += [f"    {line.rstrip()}" for line in open(path) if line.strip()] or ["    (none)"]
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
