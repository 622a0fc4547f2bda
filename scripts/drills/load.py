#!/usr/bin/env python3
"""Closed-loop HTTP load for the fault drills, recording every request.

Each worker thread keeps one keep-alive connection and cycles through the request kinds:
  login_page   GET /login                       (no database work)
  dashboard    GET / with a signed-in cookie    (session load, dashboard queries)
  post_login   POST /login for a unique address at a domain that may not sign in, so each
               200 answer must have left exactly one `login_denied` audit row for it
One JSON line per request goes to --out: start time (Unix seconds), latency (ms), kind,
status (0 when the connection failed), and the address for post_login.
Runs for --duration seconds, or until SIGTERM / SIGINT.
"""

import argparse
import http.client
import json
import signal
import threading
import time
import urllib.parse


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--kinds", default="login_page,dashboard,post_login")
    parser.add_argument("--session-cookies", help="file: one Cookie header per line (signed in)")
    parser.add_argument("--browser-cookie", default="", help="Cookie header of a browser that is not signed in")
    parser.add_argument("--csrf", default="", help="that browser's CSRF token")
    parser.add_argument("--domain", default="drill.invalid")
    parser.add_argument("--tag", default="drill", help="prefix of the unique addresses")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    url = urllib.parse.urlsplit(args.base)
    kinds = args.kinds.split(",")
    sessions = []
    if args.session_cookies:
        sessions = [line.strip() for line in open(args.session_cookies) if line.strip()]
    if "dashboard" in kinds and not sessions:
        parser.error("dashboard needs --session-cookies")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration
    lock = threading.Lock()
    out = open(args.out, "w", buffering=1)

    def worker(number):
        conn = None
        sent = 0
        while not stop.is_set() and time.monotonic() < deadline:
            kind = kinds[sent % len(kinds)]
            sent += 1
            email = None
            headers = {"User-Agent": f"LatchkeyDrill/1.0 (worker {number})"}
            if kind == "login_page":
                method, path, body = "GET", "/login", None
            elif kind == "dashboard":
                method, path, body = "GET", "/", None
                headers["Cookie"] = sessions[(number + sent) % len(sessions)]
            else:
                email = f"{args.tag}-{number}-{sent}@{args.domain}"
                method, path = "POST", "/login"
                body = urllib.parse.urlencode({"email": email, "csrf_token": args.csrf})
                headers["Cookie"] = args.browser_cookie
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            started = time.time()
            t0 = time.monotonic()
            status = 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            latency = (time.monotonic() - t0) * 1000
            record = {"t": round(started, 4), "ms": round(latency, 2), "kind": kind, "status": status}
            if email:
                record["email"] = email
            with lock:
                out.write(json.dumps(record) + "\n")
            if status == 0:
                time.sleep(0.05)  # refused while down: do not spin

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.close()


if __name__ == "__main__":
    main()
