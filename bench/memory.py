#!/usr/bin/env python3
"""Peak memory of the largest JSON export and import the default limits allow (issue 10).

Not part of the test suite. Starts the release server (`serve --dev`) once per request, so
each measurement starts from a fresh process, and reads the process's peak RSS (VmHWM in
/proc/PID/status) before and after one request:

  export  POST /api/v1/exports, one JSON grid document just under export.max_json_bytes
  import  POST /api/v1/imports, a workbook of R rows (base64) and its original grid in one
          body under export.max_json_bytes, with a key, so the change set is computed

With --reference REV the same requests go to a build of REV (a git worktree, its own target
folder), the code before the fix: the ratio of the two peaks is the result.

Usage: python3 bench/memory.py [--reference REV] [--import-rows 700000]
"""
import argparse
import base64
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
MAX_JSON = 64 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM")


class Server:
    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="ob-mem-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "serve", "--dev", "--listen", f"127.0.0.1:{self.port}"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the server did not start")
        with open(os.path.join(self.dir, "data", "dev-keys.json")) as f:
            self.key = json.load(f)["client"]

    def post(self, path, content_type, body):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method="POST",
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def export_body():
    """A grid document of mixed columns, as close under the JSON limit as it gets."""
    rng = random.Random(7)
    cols = [{"key": "sku", "type": "text"}, {"key": "name", "type": "text"},
            {"key": "qty", "type": "integer"}, {"key": "price", "type": "currency", "currency": "EUR"},
            {"key": "when", "type": "date"}, {"key": "ok", "type": "boolean"}]
    head = json.dumps({"title": "Memory", "sheets": [{"name": "Grid", "columns": cols, "rows": []}]})
    prefix, suffix = head[: head.rindex("[]") + 1], head[head.rindex("[]") + 1:]
    parts, size, i = [], len(head), 0
    while True:
        row = json.dumps([f"SKU-{i:08d}", f"Item {rng.randrange(10**9)} blue", rng.randrange(10**6),
                          round(rng.random() * 1000, 2), f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}", i % 3 == 0])
        if size + len(row) + 1 > MAX_JSON - 16:
            break
        parts.append(row)
        size += len(row) + 1
        i += 1
    return (prefix + ",".join(parts) + suffix).encode(), i


def import_body(server, rows):
    cols = [{"key": "sku", "type": "text"}, {"key": "name", "type": "text"}]
    grid = {"sheets": [{"name": "Grid", "columns": cols,
                        "rows": [[f"SKU-{i:08d}", f"Customer name {i:09d}"] for i in range(rows)]}]}
    doc = json.dumps(grid).encode()
    status, xlsx = server.post("/api/v1/exports", "application/json", doc)
    if status != 200:
        raise SystemExit(f"export for the import failed: {status} {xlsx[:300]}")
    body = json.dumps({"workbook": base64.b64encode(xlsx).decode(), "key": "sku", "original": grid}).encode()
    if len(body) > MAX_JSON:
        raise SystemExit(f"the import body is {len(body)} bytes, over the limit: lower --import-rows")
    return body


def measure(binary, export_doc, import_rows):
    result = {}
    s = Server(binary)
    try:
        base = hwm_mib(s.proc.pid)
        t = time.time()
        status, _ = s.post("/api/v1/exports", "application/json", export_doc)
        result["export"] = {"status": status, "seconds": round(time.time() - t, 2),
                            "idle_mib": round(base, 1), "peak_mib": round(hwm_mib(s.proc.pid), 1)}
        body = import_body(s, import_rows)
    finally:
        s.stop()
    s = Server(binary)
    try:
        base = hwm_mib(s.proc.pid)
        t = time.time()
        status, answer = s.post("/api/v1/imports", "application/json", body)
        result["import"] = {"status": status, "seconds": round(time.time() - t, 2), "body_bytes": len(body),
                            "answer_bytes": len(answer), "idle_mib": round(base, 1),
                            "peak_mib": round(hwm_mib(s.proc.pid), 1)}
    finally:
        s.stop()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", help="a git revision to measure the same way, e.g. the code before the fix")
    ap.add_argument("--import-rows", type=int, default=700_000)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    builds = {"ours": os.path.join(ROOT, "target", "release", "officebridge")}
    if args.reference:
        tree = os.path.join(OUT, "reference-tree")
        if os.path.exists(tree):
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT)
        subprocess.run(["git", "worktree", "add", "--detach", tree, args.reference], cwd=ROOT, check=True)
        target = os.path.join(OUT, "reference-target")
        subprocess.run(["cargo", "build", "--release", "--locked", "--target-dir", target], cwd=tree, check=True)
        builds["reference"] = os.path.join(target, "release", "officebridge")
    doc, rows = export_body()
    print(f"export: a grid document of {len(doc)} bytes, {rows} rows x 6 columns", file=sys.stderr)
    results = {"export_body_bytes": len(doc), "export_rows": rows, "import_rows": args.import_rows}
    for name, binary in builds.items():
        results[name] = measure(binary, doc, args.import_rows)
        print(name, json.dumps(results[name]), file=sys.stderr)
    with open(os.path.join(OUT, "memory.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
