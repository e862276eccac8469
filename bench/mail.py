#!/usr/bin/env python3
"""Outbox benchmark (issue 13). Not part of the test suite.

Runs the release binary as shipped — `officebridge serve` on SQLite against a separate
`officebridge emulator` process (Outlook's limits on: 4 concurrent requests per app and
mailbox) — and measures, each against a reference taken in the same run:

  queue    POST /api/v1/mail from 8 keep-alive client threads: messages per second and
           latency percentiles (target: >= 500/s, p99 < 50 ms). Reference: the same client
           asking GET /healthz, the most this client can ask of this server.
  drain    the queued messages delivered by the server's outbox workers through Graph
           direct from one mailbox (target: >= 90% of the rate the 4-concurrent limit allows
           at the emulator's latency, and no 429). Reference: a client making the same Graph
           calls per message (create the draft, send it) against the same emulator at
           exactly 4 concurrent — the most that limit allows.
  memory   a 100 MB attachment uploaded, queued and sent by one worker: the server's peak RSS
           (VmHWM, reset just before) above its RSS before (target: < 30 MiB).

  With --graph-latency-ms N every Graph call waits N ms in the emulator before it is answered
  (a fault with only a delay), for the drain's ratio at a latency like Exchange Online's.

Usage: python3 bench/mail.py [--messages 2000] [--attachment-mib 100] [--graph-latency-ms 0]
"""
import argparse
import base64
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "officebridge")
TENANT = "7e1a1c3d-5b2f-4e8a-9c6d-0f1e2d3c4b5a"
CLIENT = "3c5e7a9b-1d2f-4a6c-8e0b-2d4f6a8c0e1b"
SECRET = "demo-client-secret"
USER = "demo@demo.onmicrosoft.com"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url):
    for _ in range(400):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer")


class Emulator:
    def __enter__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([BIN, "emulator", "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"{self.url}/{TENANT}/v2.0/.well-known/openid-configuration")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()

    def requests(self):
        with urllib.request.urlopen(f"{self.url}/_emulator/requests") as r:
            return json.load(r)


class Server:
    """`officebridge serve` on the bench's database, with `workers` outbox workers."""

    def __init__(self, env, workers):
        self.env, self.workers = env, workers

    def __enter__(self):
        self.port = free_port()
        env = dict(self.env, OFFICEBRIDGE_LISTEN=f"127.0.0.1:{self.port}",
                   OFFICEBRIDGE_MAIL__WORKERS=str(self.workers))
        self.proc = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"http://127.0.0.1:{self.port}/readyz")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()

    def status(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # MiB
        raise KeyError(field)

    def reset_peak(self):
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")


def call(conn, method, path, body=None, headers=None):
    h = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h["content-type"] = "application/json"
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def setup(env, emu, admin):
    with Server(env, 0) as s:
        c = http.client.HTTPConnection("127.0.0.1", s.port)
        auth = {"authorization": f"Bearer {admin}"}
        for method, path, body in [
            ("POST", "/api/v1/tenants", {"code": "DEMO", "tenant_id": TENANT, "client_id": CLIENT,
                                         "platform": "public_client", "redirect_url": "http://localhost",
                                         "client_secret": SECRET, "authority": emu.url, "graph_endpoint": emu.url}),
            ("PUT", "/api/v1/companies/ACME", {"name": "Acme Ltd"}),
            ("POST", "/api/v1/profiles", {"name": "DIRECT", "provider": "graph_direct", "apply_to": "system",
                                          "functions": ["default"], "graph_direct": {"tenant": "DEMO", "from": USER}}),
        ]:
            status, data = call(c, method, path, body, auth)
            if status >= 300:
                raise SystemExit(f"{method} {path}: {status} {data[:300]!r}")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def hammer(port, n, threads, request):
    """`request(conn, i)` n times from `threads` keep-alive connections: (seconds, latencies)."""
    latencies = [0.0] * n
    counter = iter(range(n))
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            request(conn, i)
            latencies[i] = time.perf_counter() - t

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(threads):
            pool.submit(worker)
    return time.perf_counter() - started, latencies


def queue_phase(env, client, n):
    message = {"company": "ACME", "function": "default", "to": ["ap@fabrikam.com"],
               "subject": "Statement", "text": "Your statement.", "html": "<p>Your statement.</p>"}
    auth = {"authorization": f"Bearer {client}"}

    def post_mail(conn, i):
        status, data = call(conn, "POST", "/api/v1/mail", dict(message, subject=f"Statement {i}"),
                            dict(auth, **{"idempotency-key": f"bench-{i}"}))
        if status != 202:
            raise SystemExit(f"POST /api/v1/mail: {status} {data[:300]!r}")

    def healthz(conn, i):
        status, _ = call(conn, "GET", "/healthz")
        assert status == 200

    with Server(env, 0) as s:
        hammer(s.port, 200, 8, healthz)  # warm up
        ref_secs, _ = hammer(s.port, n, 8, healthz)
        secs, lat = hammer(s.port, n, 8, post_mail)
    return {"messages": n, "seconds": secs, "per_second": n / secs,
            "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
            "max_ms": max(lat) * 1000, "healthz_per_second": n / ref_secs}


def app_token(emu):
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET,
                                   "scope": "https://graph.microsoft.com/.default"}).encode()
    with urllib.request.urlopen(f"{emu.url}/{TENANT}/oauth2/v2.0/token", form) as r:
        return json.load(r)["access_token"]


def reference_drain(emu, n):
    """The same Graph calls per message as the outbox makes, at exactly 4 concurrent."""
    token = app_token(emu)
    base = f"/v1.0/users/{urllib.parse.quote(USER)}"
    headers = {"authorization": f"Bearer {token}", "prefer": 'IdType="ImmutableId"'}

    def one(conn, i):
        status, data = call(conn, "POST", f"{base}/messages", {
            "subject": f"Reference {i}", "body": {"contentType": "HTML", "content": "<p>Your statement.</p>"},
            "toRecipients": [{"emailAddress": {"address": "ap@fabrikam.com"}}],
            "singleValueExtendedProperties": [{"id": "String {f2a7c5e1-6b0d-4c3e-9a8f-1d2e3c4b5a69} Name OfficebridgeOutboxId",
                                               "value": f"reference-{i}"}]}, headers)
        assert status == 201, (status, data[:200])
        draft = json.loads(data)["id"]
        status, data = call(conn, "POST", f"{base}/messages/{urllib.parse.quote(draft)}/send", b"",
                            dict(headers, **{"content-length": "0"}))
        assert status == 202, (status, data[:200])

    secs, _ = hammer(emu.port, n, 4, one)
    return {"messages": n, "seconds": secs, "per_second": n / secs}


def drain_phase(env, emu, n):
    before = len(emu.requests())
    with Server(env, 4) as s:
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", s.port)
        while True:
            _, data = call(conn, "GET", "/metrics")
            text = data.decode()
            left = sum(float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith(('outbox_messages{state="queued"}', 'outbox_messages{state="sending"}',
                                           'outbox_messages{state="retrying"}')))
            if left == 0:
                break
            time.sleep(0.02)
        secs = time.perf_counter() - started
        sent = sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith('outbox_messages{state="sent"}'))
    log = emu.requests()[before:]
    return {"messages": n, "sent": sent, "seconds": secs, "per_second": n / secs,
            "graph_requests": len(log), "throttled_429": sum(1 for r in log if r["status"] == 429)}


def memory_phase(env, client, mib, workdir):
    path = os.path.join(workdir, "attachment.bin")
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    size = os.path.getsize(path)
    with Server(env, 1) as s:
        conn = http.client.HTTPConnection("127.0.0.1", s.port)
        call(conn, "GET", "/healthz")
        time.sleep(0.5)
        rss_before = s.status("VmRSS")
        s.reset_peak()
        with open(path, "rb") as f:
            conn.request("POST", "/api/v1/uploads?name=ledger.bin", body=f,
                         headers={"authorization": f"Bearer {client}", "content-length": str(size),
                                  "content-type": "application/octet-stream"})
            r = conn.getresponse()
            upload = json.loads(r.read())
            assert r.status == 201, upload
        status, data = call(conn, "POST", "/api/v1/mail", {
            "company": "ACME", "function": "default", "to": ["ap@fabrikam.com"], "subject": "Ledger",
            "text": "The ledger.", "attachments": [{"upload": upload["id"]}]}, {"authorization": f"Bearer {client}"})
        assert status == 202, data
        mail_id = json.loads(data)["id"]
        started = time.perf_counter()
        while True:
            _, data = call(conn, "GET", f"/api/v1/mail/{mail_id}", headers={"authorization": f"Bearer {client}"})
            state = json.loads(data)["state"]
            if state in ("sent", "failed"):
                break
            time.sleep(0.1)
        peak = s.status("VmHWM")
    return {"attachment_bytes": size, "state": state, "send_seconds": time.perf_counter() - started,
            "rss_before_mib": rss_before, "peak_mib": peak, "peak_added_mib": peak - rss_before}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--attachment-mib", type=int, default=100)
    ap.add_argument("--graph-latency-ms", type=int, default=0)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--bin", "officebridge"], cwd=ROOT, check=True)
    results = {}
    with tempfile.TemporaryDirectory() as work, Emulator() as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OFFICEBRIDGE_")}
        env.update(OFFICEBRIDGE_DATABASE_URL=f"sqlite://{work}/bench.db",
                   OFFICEBRIDGE_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
                   OFFICEBRIDGE_DATA_DIR=work, OFFICEBRIDGE_ALLOW_EMULATOR="true",
                   OFFICEBRIDGE_EMULATOR_URL=emu.url, OFFICEBRIDGE_LOG__LEVEL="warn",
                   OFFICEBRIDGE_PUBLIC_URL="http://localhost:8080")
        subprocess.run([BIN, "migrate"], env=env, check=True, capture_output=True)
        key = lambda role: subprocess.run([BIN, "apikeys", "create", "--role", role, "--name", f"bench-{role}"],
                                          env=env, check=True, capture_output=True, text=True).stdout.strip()
        admin, client = key("admin"), key("client")
        setup(env, emu, admin)
        results["queue"] = queue_phase(env, client, args.messages)
        print(json.dumps({"queue": results["queue"]}), flush=True)
        if args.graph_latency_ms:
            post_fault = urllib.request.Request(
                f"{emu.url}/_emulator/faults", json.dumps([{"path": "/v1.0/*", "delay_ms": args.graph_latency_ms,
                                                            "times": 1_000_000}]).encode(),
                {"content-type": "application/json"}, method="POST")
            urllib.request.urlopen(post_fault).read()
        results["graph_latency_ms"] = args.graph_latency_ms
        results["reference_drain"] = reference_drain(emu, args.messages)
        results["drain"] = drain_phase(env, emu, args.messages)
        results["drain"]["ratio_to_reference"] = results["drain"]["per_second"] / results["reference_drain"]["per_second"]
        print(json.dumps({k: results[k] for k in ("reference_drain", "drain")}), flush=True)
        results["memory"] = memory_phase(env, client, args.attachment_mib, work)
        print(json.dumps({"memory": results["memory"]}), flush=True)
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "out", "mail.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
