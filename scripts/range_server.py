#!/usr/bin/env python3
"""A static HTTP server with Range requests, for blockflow's http(s) reader
tests (python's http.server answers a Range request with the whole file
and 200). Standard library only.

Serves DIR on 127.0.0.1 (a free port unless --port), prints one line of
JSON `{"url": "http://127.0.0.1:PORT", "log": "..."}` once it serves, and
appends one line per GET to the log (`GET PATH RANGE-OR-whole`), so a test
can check that a read fetched byte ranges, not whole objects. It stops
when its standard input closes.

Usage: python3 scripts/range_server.py DIR LOG [--port N]
"""

import http.server
import json
import os
import re
import sys
import threading


def handler(root, log):
    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _file(self):
            rel = self.path.split("?", 1)[0].lstrip("/")
            path = os.path.realpath(os.path.join(root, rel))
            if not path.startswith(os.path.realpath(root)) or not os.path.isfile(path):
                return None
            return path

        def do_HEAD(self):
            path = self._file()
            if path is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self):
            path = self._file()
            rng = self.headers.get("Range")
            with lock, open(log, "a") as f:
                f.write(f"GET {self.path} {rng or 'whole'}\n")
            if path is None:
                self.send_error(404)
                return
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                data = f.read()
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng or "")
            if not m:
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(data)
                return
            a, b = m.groups()
            if a == "":
                start, end = max(size - int(b), 0), size - 1
            else:
                start, end = int(a), min(int(b) if b else size - 1, size - 1)
            if start > end or start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.wfile.write(data[start : end + 1])

    return H


def main():
    args = sys.argv[1:]
    port = 0
    if "--port" in args:
        i = args.index("--port")
        port = int(args[i + 1])
        del args[i : i + 2]
    root, log = args
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler(root, log))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(json.dumps({"url": f"http://127.0.0.1:{srv.server_address[1]}", "log": log}), flush=True)
    while sys.stdin.read(1):
        pass
    srv.shutdown()


if __name__ == "__main__":
    main()
