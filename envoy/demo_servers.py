#!/usr/bin/env python3
"""The demo's stand-ins for the real world, on 127.0.0.1:

- an upstream "chat API" that echoes what reached it (so you can see what the
  filter changed) and answers /v1/chat/completions like an LLM would;
- the identity provider's JWKS endpoint, serving a file;
- an audit collector that prints every record it receives.

Usage: demo_servers.py UPSTREAM_PORT IDP_PORT COLLECTOR_PORT JWKS_FILE
"""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

upstream_port, idp_port, collector_port, jwks_file = sys.argv[1:5]


class Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        # chatguard drops content-length when it may rewrite a body: read chunked too.
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, ctype, payload):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class Upstream(Quiet):
    def do_any(self):
        body = self.body()
        if self.command == "POST" and self.path.startswith("/api/chat"):
            reply = {"object": "chat.completion", "choices": [{"message": {"role": "assistant",
                     "content": "Sure. Your account manager is jane.doe@example.com, phone (555) 123-4567."}}],
                     "usage": {"prompt_tokens": 12, "completion_tokens": 18, "total_tokens": 30},
                     "what_the_model_received": body.decode("utf-8", "replace")}
            return self.send(200, "application/json", json.dumps(reply).encode())
        echo = {"method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace")}
        self.send(200, "application/json", json.dumps(echo, indent=1).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_any


class Idp(Quiet):
    def do_GET(self):
        with open(jwks_file, "rb") as f:
            self.send(200, "application/json", f.read())


def otlp_value(v):
    """An OTLP/JSON AnyValue as plain JSON (int64 travels as a string)."""
    (kind, x), = v.items()
    if kind == "intValue":
        return int(x)
    if kind == "arrayValue":
        return [otlp_value(i) for i in x.get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: otlp_value(kv["value"]) for kv in x.get("values", [])}
    return x


def audit_records(ctype, body):
    """The records of one batch, flat, in either wire format (audit.format)."""
    if "ndjson" in ctype:
        return [json.loads(line) for line in body.splitlines() if line.strip()]
    out = []
    for rl in json.loads(body).get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for log in sl.get("logRecords", []):
                rec = {"kind": otlp_value(log["body"])}
                rec.update({kv["key"]: otlp_value(kv["value"]) for kv in log.get("attributes", [])})
                out.append(rec)
    return out


class Collector(Quiet):
    def do_POST(self):
        body = self.body()
        ctype = self.headers.get("content-type") or ""
        try:
            records = audit_records(ctype, body)
        except (ValueError, KeyError, AttributeError) as e:
            print(f"[collector] {self.path}: unreadable batch ({e}): {body[:200]!r}", flush=True)
            records = []
        # One line per record, whatever the wire format.
        for rec in records:
            print("[audit] " + json.dumps(rec, separators=(",", ":")), flush=True)
        self.send(200, "application/json", b"{}")


servers = [ThreadingHTTPServer(("127.0.0.1", int(p)), h)
           for p, h in ((upstream_port, Upstream), (idp_port, Idp), (collector_port, Collector))]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
