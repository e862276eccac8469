#!/usr/bin/env python3
"""SMTP drain benchmark (issue 14). Not part of the test suite.

Runs the release binary as shipped — `officebridge serve` on SQLite — against Debian
postfix's `smtp-sink` on loopback (it accepts everything and keeps nothing), and compares,
in the same run and at the same concurrency:

  reference  Debian postfix's `smtp-source` sending the same number of messages of the same
             size to the same sink over that many parallel sessions, each kept open for the
             next message (`-d`), as our outbox keeps its connections;
  drain      the messages queued by POST /api/v1/mail (no workers running), then delivered
             by the server's outbox workers through an SMTP profile on that sink — every
             state change (claimed, submitting, sent with its attempt) committed to the
             database before the next step.

The reference is run before and after the drain; their spread is the machine's noise.
Target: officebridge's rate >= 50% of smtp-source's.

Usage: python3 bench/smtp.py [--messages 10000] [--concurrency 4] [--postgres postgres://postgres@127.0.0.1:5432/test]
(--postgres: the outbox in a fresh schema of that database instead of SQLite)
Needs: apt-get install postfix (for /usr/sbin/smtp-sink and /usr/sbin/smtp-source).
"""
import argparse
import base64
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mail as common  # noqa: E402  (the same server harness as bench/mail.py)

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
FROM = "statements@contoso.com"
TO = "ap@fabrikam.com"
TEXT = "Your statement for November is attached to this message. " * 16  # ~1 KB, like smtp-source -l 1000


class Sink:
    def __enter__(self):
        self.port = common.free_port()
        # -u: smtp-sink drops root; 1000: the listen backlog.
        self.proc = subprocess.Popen([SINK, "-u", "nobody", f"127.0.0.1:{self.port}", "1000"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


def reference(sink, n, concurrency):
    started = time.perf_counter()
    subprocess.run([SOURCE, "-d", "-s", str(concurrency), "-m", str(n), "-l", str(len(TEXT)),
                    "-f", FROM, "-t", TO, f"127.0.0.1:{sink.port}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    secs = time.perf_counter() - started
    return {"messages": n, "seconds": secs, "per_second": n / secs}


def setup(env, sink, admin, concurrency):
    with common.Server(env, 0) as s:
        c = http.client.HTTPConnection("127.0.0.1", s.port)
        auth = {"authorization": f"Bearer {admin}"}
        for method, path, body in [
            ("PUT", "/api/v1/companies/ACME", {"name": "Acme Ltd"}),
            ("POST", "/api/v1/profiles", {"name": "SINK", "provider": "smtp", "apply_to": "system",
                                          "functions": ["default"],
                                          "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none",
                                                   "allow_insecure": True, "auth": "none", "from": FROM}}),
        ]:
            status, data = common.call(c, method, path, body, auth)
            if status >= 300:
                raise SystemExit(f"{method} {path}: {status} {data[:300]!r}")


def queue(env, client, n):
    message = {"company": "ACME", "function": "default", "to": [TO], "subject": "Statement", "text": TEXT}
    auth = {"authorization": f"Bearer {client}"}

    def post_mail(conn, i):
        status, data = common.call(conn, "POST", "/api/v1/mail", dict(message, subject=f"Statement {i}"), auth)
        if status != 202:
            raise SystemExit(f"POST /api/v1/mail: {status} {data[:300]!r}")

    with common.Server(env, 0) as s:
        secs, _ = common.hammer(s.port, n, 8, post_mail)
    return {"messages": n, "seconds": secs, "per_second": n / secs}


def drain(env, n, concurrency):
    env = dict(env, OFFICEBRIDGE_MAIL__SMTP_CONNECTIONS=str(concurrency))
    with common.Server(env, concurrency) as s:
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", s.port)
        while True:
            _, data = common.call(conn, "GET", "/metrics")
            text = data.decode()
            gauge = lambda state: sum(float(line.split()[-1]) for line in text.splitlines()
                                      if line.startswith(f'outbox_messages{{state="{state}"}}'))
            if gauge("queued") + gauge("sending") + gauge("retrying") == 0:
                break
            time.sleep(0.02)
        secs = time.perf_counter() - started
        return {"messages": n, "sent": gauge("sent"), "failed": gauge("failed"), "held": gauge("held"),
                "seconds": secs, "per_second": n / secs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--postgres", help="a PostgreSQL URL; the bench works in a fresh schema of it")
    args = ap.parse_args()
    for tool in (SINK, SOURCE):
        if not os.path.exists(tool):
            raise SystemExit(f"{tool} is missing: apt-get install postfix")
    subprocess.run(["cargo", "build", "--release", "--bin", "officebridge"], cwd=common.ROOT, check=True)
    results = {"concurrency": args.concurrency, "message_bytes": len(TEXT),
               "database": "postgresql" if args.postgres else "sqlite"}
    with tempfile.TemporaryDirectory() as work, Sink() as sink:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OFFICEBRIDGE_")}
        database_url = f"sqlite://{work}/bench.db"
        if args.postgres:
            schema = f"bench_{secrets.token_hex(8)}"
            subprocess.run(["psql", args.postgres, "-q", "-c", f"CREATE SCHEMA {schema}"], check=True)
            database_url = f"{args.postgres}?options=-c%20search_path%3D{schema}"
        env.update(OFFICEBRIDGE_DATABASE_URL=database_url,
                   OFFICEBRIDGE_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
                   OFFICEBRIDGE_DATA_DIR=work, OFFICEBRIDGE_LOG__LEVEL="warn",
                   OFFICEBRIDGE_PUBLIC_URL="http://localhost:8080")
        subprocess.run([common.BIN, "migrate"], env=env, check=True, capture_output=True)
        key = lambda role: subprocess.run([common.BIN, "apikeys", "create", "--role", role, "--name", f"bench-{role}"],
                                          env=env, check=True, capture_output=True, text=True).stdout.strip()
        admin, client = key("admin"), key("client")
        setup(env, sink, admin, args.concurrency)
        results["reference_before"] = reference(sink, args.messages, args.concurrency)
        results["queue"] = queue(env, client, args.messages)
        results["drain"] = drain(env, args.messages, args.concurrency)
        results["reference_after"] = reference(sink, args.messages, args.concurrency)
    refs = [results["reference_before"]["per_second"], results["reference_after"]["per_second"]]
    ref = sum(refs) / 2
    results["reference_noise"] = (max(refs) - min(refs)) / ref
    results["ratio_to_reference"] = results["drain"]["per_second"] / ref
    print(json.dumps(results, indent=2))
    os.makedirs(os.path.join(common.ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(common.ROOT, "bench", "out", "smtp.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
