#!/usr/bin/env python3
"""OneDrive upload benchmark (issue 5). Not part of the test suite.

Uploads a 1 GiB file to the emulator (a separate `officebridge emulator` process) two ways,
alternating, each run against a freshly started emulator:
  ours   examples/bench_upload.rs: the token store, Graph client and upload session that
         `POST /api/v1/exports?destination=onedrive` uses (10 MiB fragments, read from the file
         one at a time). It reports the peak RSS the upload added (VmHWM after resetting it).
  curl   the same 10 MiB fragments, split beforehand (not timed), each PUT by `curl -T` to an
         upload session of the same emulator: the reference throughput.
The file's bytes are random: an upload does not look inside the workbook, and random bytes
are what a compressed XLSX looks like to the wire.

Targets: ours adds < 30 MiB (3 fragments) of peak memory; ours/curl throughput >= 0.8.
Usage: python3 bench/upload.py [--mib 1024] [--runs 3]
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
TENANT = "7e1a1c3d-5b2f-4e8a-9c6d-0f1e2d3c4b5a"
CLIENT = "3c5e7a9b-1d2f-4a6c-8e0b-2d4f6a8c0e1b"
USER = "demo@demo.onmicrosoft.com"
FRAGMENT = 10 * 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    def __enter__(self):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "officebridge"), "emulator", "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{self.url}/{TENANT}/v2.0/.well-known/openid-configuration", timeout=1)
                return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the emulator did not start")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


def post(url, data, headers=None, form=False):
    body = urllib.parse.urlencode(data).encode() if form else json.dumps(data).encode()
    h = {"content-type": "application/x-www-form-urlencoded" if form else "application/json"}
    h.update(headers or {})
    with urllib.request.urlopen(urllib.request.Request(url, body, h, method="POST")) as r:
        return json.load(r)


def ours(emu, path):
    out = subprocess.run([os.path.join(BIN, "examples", "bench_upload"), emu.url, path],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_upload failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def user_token(emu):
    """The demo user's Files.ReadWrite token: authorization code + PKCE (plain), the account
    picked through the emulator's sign-in request header."""
    verifier = "v" * 43
    authorize = f"{emu.url}/{TENANT}/oauth2/v2.0/authorize"
    query = urllib.parse.urlencode({
        "client_id": CLIENT, "response_type": "code", "redirect_uri": "http://localhost",
        "scope": "Files.ReadWrite", "code_challenge": verifier, "code_challenge_method": "plain"})
    with urllib.request.urlopen(f"{authorize}?{query}") as page:
        request = page.headers["x-emulator-signin-request"]
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(authorize, urllib.parse.urlencode({"request": request, "user": USER}).encode())
        raise SystemExit("the emulator did not redirect")
    except urllib.error.HTTPError as e:
        code = urllib.parse.parse_qs(urllib.parse.urlparse(e.headers["location"]).query)["code"][0]
    return post(f"{emu.url}/{TENANT}/oauth2/v2.0/token", {
        "client_id": CLIENT, "grant_type": "authorization_code", "code": code,
        "redirect_uri": "http://localhost", "code_verifier": verifier}, form=True)["access_token"]


def curl(emu, fragments, size):
    token = user_token(emu)
    session = post(f"{emu.url}/v1.0/me/drive/root:/curl.bin:/createUploadSession",
                   {"item": {"@microsoft.graph.conflictBehavior": "rename"}},
                   {"authorization": f"Bearer {token}"})
    started = time.perf_counter()
    offset = 0
    for frag in fragments:
        n = os.path.getsize(frag)
        code = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", frag,
             "-H", f"Content-Range: bytes {offset}-{offset + n - 1}/{size}", session["uploadUrl"]],
            capture_output=True, text=True, check=True).stdout
        if code not in ("202", "201", "200"):
            raise SystemExit(f"curl fragment at {offset} answered {code}")
        offset += n
    return time.perf_counter() - started


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "officebridge", "--example", "bench_upload"],
                   cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="ob-upload-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        path = os.path.join(work, "export.bin")
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        size = os.path.getsize(path)
        fragments = []
        with open(path, "rb") as f:
            i = 0
            while chunk := f.read(FRAGMENT):
                frag = os.path.join(work, f"frag{i:05}")
                with open(frag, "wb") as g:
                    g.write(chunk)
                fragments.append(frag)
                i += 1
        o_times, c_times, added = [], [], []
        for run in range(args.runs):
            order = ["ours", "curl"] if run % 2 == 0 else ["curl", "ours"]
            for who in order:
                with Emulator() as emu:
                    if who == "ours":
                        r = ours(emu, path)
                        o_times.append(r["seconds"])
                        added.append(r["peak_added"])
                    else:
                        c_times.append(curl(emu, fragments, size))
        o, c = statistics.median(o_times), statistics.median(c_times)
        result = {
            "bytes": size,
            "ours_seconds": o_times, "curl_seconds": c_times,
            "ours_mib_s": size / o / 2**20, "curl_mib_s": size / c / 2**20,
            "throughput_ratio": c / o,
            "peak_added_mib": [a / 2**20 for a in added],
        }
        print(json.dumps(result, indent=2))
        ok = max(added) < 30 * 2**20 and c / o >= 0.8
        print("targets:", "met" if ok else "NOT met", file=sys.stderr)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
