"""The protected app in the proxy tests: answers every request with the path and the headers it
received (names lower-cased, every value kept), and counts the requests it served."""
import http.server
import json
import sys
import threading

served = 0
lock = threading.Lock()


class Echo(http.server.BaseHTTPRequestHandler):
    def answer(self):
        global served
        with lock:
            served += 1
        headers = {}
        for name, value in self.headers.items():
            # http.server reads header bytes as Latin-1; the proxies pass UTF-8 on as sent.
            value = value.encode("latin-1").decode("utf-8", "replace")
            headers.setdefault(name.lower(), []).append(value)
        body = json.dumps({"path": self.path, "headers": headers, "served": served}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
