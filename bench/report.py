#!/usr/bin/env python3
"""The results table of bench/run.sh, with the targets of BENCHMARKS.md checked.

Usage: report.py RESULTS.tsv OUT.md LATCHKEY_VMHWM_KB BARE_VMHWM_KB POST_LOGIN_AUDIT.txt MAILS
"""

import csv
import sys

tsv, md, hwm, bare_hwm, audit_file, mails = sys.argv[1:7]
rows = {r["name"]: r for r in csv.DictReader(open(tsv), delimiter="\t")}
REFERENCES = ("pgbench_select_only", "bare_actix_get")


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

signed_in = rps("get_dashboard_signed_in") / rps("pgbench_select_only")
login = rps("get_login") / rps("bare_actix_get")
check = rps("get_auth_check_signed_in") / rps("bare_actix_get")
peak = int(hwm) / 1024
lines += [
    "",
    "| target | measured | |",
    "|---|---|---|",
    f"| signed-in GET / >= 40% of pgbench -S | {signed_in:.1%} | {verdict(signed_in >= 0.40)} |",
    f"| GET /login >= 60% of bare actix-web | {login:.0%} | {verdict(login >= 0.60)} |",
    f"| signed-in GET /auth/check >= 25% of bare actix-web | {check:.1%} | {verdict(check >= 0.25)} |",
]
for name, r in rows.items():
    if name not in REFERENCES:
        p99 = float(r["p99_ms"])
        lines.append(f"| p99 < 10 ms at 64 connections: {name} | {p99:.2f} ms | {verdict(p99 < 10)} |")
lines += [
    f"| latchkey peak RSS (VmHWM) < 64 MB | {peak:.1f} MB | {verdict(peak < 64)} |",
    "",
    f"bare actix-web peak RSS: {int(bare_hwm) / 1024:.1f} MB",
    "",
    "audit rows written during POST /login (event count): "
    + ", ".join(line for line in open(audit_file).read().split("\n") if line),
    f"mails written by the file backend during the run: {mails}",
]
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
