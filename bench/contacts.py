#!/usr/bin/env python3
"""Contact lookup benchmark (issue 15). Not part of the test suite.

Runs the release binary as shipped — `officebridge serve` on SQLite against a separate
`officebridge emulator` process (Outlook's limits on: 4 concurrent requests per app and
mailbox) seeded with a directory of 2,000 users, 200 organisational contacts and 20 signed-in
operators with 300 personal contacts each in three folders — and measures, with the Graph
sources delayed by fault script (people 80 ms, directory 120 ms, organisational contacts 60 ms):

  concurrent  500 searches by one operator, one after another: the p95 of the answer against
              the p95 of the slowest source called alone for the same queries (the reference:
              the three Graph calls made directly against the emulator with the operator's
              token, the slowest of the three per query — what a lookup with no overhead and
              the sources really at once would take). Target: at most 15 ms above it.
  hanging     50 searches with the organisational contacts never answering: every answer
              comes at the budget (`contacts.source_budget_ms`, 400 ms), marked `timeout` and
              `partial`, the other sources' results in it.
  typing      20 operators typing at once, a query every 150 ms each (a name letter by
              letter) for a minute: no source `throttled`, no 429 in the emulator's log.

Usage: python3 bench/contacts.py [--queries 500] [--typing-seconds 60]
"""
import argparse
import base64
import http.client
import http.cookiejar
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "officebridge")
TENANT = "7e1a1c3d-5b2f-4e8a-9c6d-0f1e2d3c4b5a"
DOMAIN = "demo.onmicrosoft.com"
CLIENT = "3c5e7a9b-1d2f-4a6c-8e0b-2d4f6a8c0e1b"
SECRET = "demo-client-secret"
SCOPES = "offline_access openid profile User.Read Contacts.Read People.Read User.ReadBasic.All"
DELAYS = {"/v1.0/me/people": 80, "/v1.0/users": 120, "/v1.0/contacts": 60}
OPERATORS = 20
FIRST = ["Ada", "Alan", "Grace", "Katherine", "Joan", "Jo", "James", "Janet", "Jasper", "Linus", "Margaret",
         "Barbara", "Donald", "Edsger", "Frances", "Hedy", "Ivan", "John", "Ken", "Leslie", "Niklaus", "Radia",
         "Shafi", "Tim", "Whitfield", "Yukihiro", "Zhang", "Ana", "Björn", "Chloé"]
LAST = ["Lovelace", "Turing", "Hopper", "Johnson", "Clarke", "Smith", "Brown", "Ito", "Quinn", "Torvalds",
        "Hamilton", "Liskov", "Knuth", "Dijkstra", "Allen", "Lamarr", "Sutherland", "Backus", "Thompson",
        "Lamport", "Wirth", "Perlman", "Goldwasser", "Berners-Lee", "Diffie", "Matsumoto", "Wei", "Müller",
        "Åberg", "Dupont"]


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


def name(rng):
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def address(full, n, domain):
    local = full.lower().replace(" ", ".").replace("ö", "o").replace("é", "e").replace("ü", "u").replace("å", "a")
    return f"{local}{n}@{domain}"


def seed(path):
    """A demo-like tenant, large enough that searches find dozens of entries per source."""
    rng = random.Random(15)
    guid = lambda i: f"00000000-0000-4000-8000-{i:012d}"
    operators = [f"op{i:02}@{DOMAIN}" for i in range(1, OPERATORS + 1)]
    users = []
    for i, upn in enumerate(operators):
        contacts = []
        for n in range(300):
            full = name(rng)
            folder = [None, "Customers", "Customers/Key accounts", "Suppliers"][n % 4]
            contacts.append({"display_name": full, "email": address(full, n, "customer.example"),
                             "company": "Customer", "folder": folder})
        users.append({"id": guid(i), "user_principal_name": upn, "display_name": f"Operator {i + 1:02}",
                      "mail": upn, "contacts": contacts,
                      "works_with": [f"user{(i * 37 + k) % 2000:04}@{DOMAIN}" for k in range(15)]})
    for n in range(2000):
        full = name(rng)
        upn = f"user{n:04}@{DOMAIN}"
        users.append({"id": guid(1000 + n), "user_principal_name": upn, "display_name": full,
                      "mail": address(full, n, DOMAIN) if n % 50 else None})
    org = [{"display_name": name(rng), "mail": address(name(rng), n, "supplier.example"), "company": "Supplier"}
           for n in range(200)]
    app = {"client_id": CLIENT, "display_name": "officebridge (bench)", "secrets": [SECRET],
           "redirect_uris": [{"uri": "http://localhost/auth/callback", "platform": "public_client"},
                             {"uri": "http://localhost", "platform": "public_client"}],
           "delegated_scopes": ["User.Read", "offline_access", "openid", "profile", "Files.ReadWrite",
                                "Contacts.Read", "People.Read", "User.ReadBasic.All", "Mail.Send",
                                "Mail.ReadWrite"],
           "exposed_scopes": ["access_as_user"], "identifier_uris": [f"api://localhost/{CLIENT}"]}
    with open(path, "w") as f:
        json.dump({"tenants": [{"id": TENANT, "domain": DOMAIN, "users": users, "apps": [app],
                                "org_contacts": org}]}, f)
    return operators


class Emulator:
    def __init__(self, seed_path):
        self.seed_path = seed_path

    def __enter__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([BIN, "emulator", "--listen", f"127.0.0.1:{self.port}", "--seed", self.seed_path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"{self.url}/{TENANT}/v2.0/.well-known/openid-configuration")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()

    def post(self, path, body, method="POST"):
        req = urllib.request.Request(f"{self.url}{path}", json.dumps(body).encode(),
                                     {"content-type": "application/json"}, method=method)
        urllib.request.urlopen(req).read()

    def faults(self, faults):
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_emulator/faults", method="DELETE")).read()
        if faults:
            self.post("/_emulator/faults", faults)

    def delays(self, hang=None):
        self.faults([{"method": "GET", "path": path, "delay_ms": 60_000 if path == hang else ms, "times": 10_000_000}
                     for path, ms in DELAYS.items()])

    def counts(self):
        """Every request the emulator answered, by status (the log itself keeps the last 10,000)."""
        with urllib.request.urlopen(f"{self.url}/_emulator/requests/counts") as r:
            return json.load(r)


class Server:
    def __init__(self, env):
        self.env = env

    def __enter__(self):
        self.port = free_port()
        env = dict(self.env, OFFICEBRIDGE_LISTEN=f"127.0.0.1:{self.port}",
                   OFFICEBRIDGE_PUBLIC_URL=f"http://localhost:{self.port}")
        self.proc = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"http://127.0.0.1:{self.port}/readyz")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


def call(conn, method, path, body=None, headers=None):
    h = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h["content-type"] = "application/json"
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    return r.status, r.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def redirect(opener, url, data=None):
    try:
        opener.open(url, data)
    except urllib.error.HTTPError as e:
        if e.code in (302, 303):
            return e.headers["location"]
        raise
    raise SystemExit(f"{url} did not redirect")


def pick_account(opener, authorize, user):
    """The emulator's sign-in page: the account picked through its sign-in request header."""
    with opener.open(authorize) as page:
        request = page.headers["x-emulator-signin-request"]
    form = urllib.parse.urlencode({"request": request, "user": user}).encode()
    return redirect(opener, authorize.split("?")[0], form)


def sign_in(port, client, operator, user):
    """An operator signed in as a browser would: the ERP's link, the account picked, the callback."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    status, data = call(conn, "POST", f"/api/v1/operators/{operator}/signin", {},
                        {"authorization": f"Bearer {client}"})
    if status != 201:
        raise SystemExit(f"sign-in link for {operator}: {status} {data[:300]!r}")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect)
    callback = pick_account(opener, redirect(opener, json.loads(data)["url"]), user)
    with opener.open(callback) as page:
        if b"Signed in" not in page.read():
            raise SystemExit(f"{operator} was not signed in")


def user_token(emu, user):
    """The operator's own Graph token (authorization code + PKCE), for the reference calls."""
    verifier = "v" * 43
    authorize = f"{emu.url}/{TENANT}/oauth2/v2.0/authorize?" + urllib.parse.urlencode({
        "client_id": CLIENT, "response_type": "code", "redirect_uri": "http://localhost", "scope": SCOPES,
        "code_challenge": verifier, "code_challenge_method": "plain"})
    opener = urllib.request.build_opener(NoRedirect)
    code = urllib.parse.parse_qs(urllib.parse.urlparse(pick_account(opener, authorize, user)).query)["code"][0]
    form = urllib.parse.urlencode({"client_id": CLIENT, "grant_type": "authorization_code", "code": code,
                                   "redirect_uri": "http://localhost", "code_verifier": verifier}).encode()
    with urllib.request.urlopen(f"{emu.url}/{TENANT}/oauth2/v2.0/token", form) as r:
        return json.load(r)["access_token"]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def summary(latencies):
    return {"n": len(latencies), "p50_ms": percentile(latencies, 0.5) * 1000,
            "p95_ms": percentile(latencies, 0.95) * 1000, "max_ms": max(latencies) * 1000}


def queries(rng, n):
    """What people type: prefixes of first and last names, whole names, address starts."""
    out = []
    for _ in range(n):
        full = name(rng)
        pick = rng.randrange(4)
        if pick == 0:
            out.append(full.split()[0][: rng.randint(2, 5)])
        elif pick == 1:
            out.append(full.split()[1][: rng.randint(2, 6)])
        elif pick == 2:
            out.append(full)
        else:
            out.append(full.lower().replace(" ", ".")[: rng.randint(3, 8)])
    return out


def search(conn, client, operator, q):
    path = "/api/v1/contacts/search?" + urllib.parse.urlencode({"q": q, "limit": 10})
    t = time.perf_counter()
    status, data = call(conn, "GET", path, headers={"authorization": f"Bearer {client}", "x-operator": operator})
    took = time.perf_counter() - t
    if status != 200:
        raise SystemExit(f"search {q!r} as {operator}: {status} {data[:300]!r}")
    return took, json.loads(data)


def reference(emu, token, qs):
    """The three Graph calls of each query made directly, one after another; the slowest per query."""
    conn = http.client.HTTPConnection("127.0.0.1", emu.port)
    auth = {"authorization": f"Bearer {token}"}
    slowest = []
    for q in qs:
        worst = 0.0
        for path, headers, search_ in [
            ("/v1.0/me/people", {"X-PeopleQuery-QuerySources": "Mailbox,Directory"}, f'"{q}"'),
            ("/v1.0/users", {"ConsistencyLevel": "eventual"}, f'"displayName:{q}" OR "mail:{q}"'),
            ("/v1.0/contacts", {"ConsistencyLevel": "eventual"}, f'"displayName:{q}" OR "mail:{q}"'),
        ]:
            query = urllib.parse.urlencode({"$search": search_, "$top": 25, "$count": "true"})
            t = time.perf_counter()
            status, data = call(conn, "GET", f"{path}?{query}", headers=dict(auth, **headers))
            worst = max(worst, time.perf_counter() - t)
            # The organisational contacts answer 403 to a delegated token without
            # OrgContact.Read.All (it is not asked for at sign-in): timed all the same.
            if status not in (200, 403):
                raise SystemExit(f"reference {path}: {status} {data[:300]!r}")
        slowest.append(worst)
    return slowest


def concurrent_phase(emu, port, client, token, n):
    rng = random.Random(500)
    qs = queries(rng, n)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for q in queries(rng, 20):  # warm up: the first search indexes the personal contacts
        search(conn, client, "OP01", q)
    ref = reference(emu, token, qs)
    conn = http.client.HTTPConnection("127.0.0.1", port)  # the warm-up's may have idled out
    took, statuses = [], {}
    for q in qs:
        t, answer = search(conn, client, "OP01", q)
        took.append(t)
        for source, status in answer["sources"].items():
            statuses.setdefault(source, {}).setdefault(status["status"], 0)
            statuses[source][status["status"]] += 1
    ours, slowest = summary(took), summary(ref)
    return {"search": ours, "slowest_source_alone": slowest, "p95_above_slowest_ms": ours["p95_ms"] - slowest["p95_ms"],
            "statuses": statuses}


def hanging_phase(emu, port, client, n):
    emu.delays(hang="/v1.0/contacts")
    conn = http.client.HTTPConnection("127.0.0.1", port)
    took, timeouts, partial, with_results = [], 0, 0, 0
    for q in queries(random.Random(50), n):
        t, answer = search(conn, client, "OP02", q)
        took.append(t)
        timeouts += answer["sources"]["org_contacts"]["status"] == "timeout"
        partial += answer["partial"]
        with_results += bool(answer["results"])
    emu.delays()
    return dict(summary(took), org_contacts_timeout=timeouts, partial=partial, answers_with_results=with_results)


def typing_phase(emu, port, client, seconds):
    before = emu.counts()
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    took, throttled, errors = [], [0], [0]

    def operator(i):
        rng = random.Random(i)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        code = f"OP{i:02}"
        typed, target = "", name(rng)
        next_at = time.monotonic()
        while time.monotonic() < stop:
            if len(typed) == len(target):
                typed, target = "", name(rng)
            typed = target[: len(typed) + 1]
            if typed.strip():
                try:
                    t, answer = search(conn, client, code, typed)
                except SystemExit:
                    with lock:
                        errors[0] += 1
                    conn = http.client.HTTPConnection("127.0.0.1", port)
                    continue
                with lock:
                    took.append(t)
                    throttled[0] += sum(s["status"] == "throttled" for s in answer["sources"].values())
            next_at += 0.150
            time.sleep(max(0.0, next_at - time.monotonic()))

    with ThreadPoolExecutor(OPERATORS) as pool:
        list(pool.map(operator, range(1, OPERATORS + 1)))
    after = emu.counts()
    too_many = after["by_status"].get("429", 0) - before["by_status"].get("429", 0)
    return dict(summary(took), operators=OPERATORS, seconds=seconds, errors=errors[0],
                sources_throttled=throttled[0], emulator_429=too_many,
                graph_requests=after["total"] - before["total"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--typing-seconds", type=int, default=60)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--bin", "officebridge"], cwd=ROOT, check=True)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        operators = seed(os.path.join(work, "seed.json"))
        with Emulator(os.path.join(work, "seed.json")) as emu:
            env = {k: v for k, v in os.environ.items() if not k.startswith("OFFICEBRIDGE_")}
            env.update(OFFICEBRIDGE_DATABASE_URL=f"sqlite://{work}/bench.db",
                       OFFICEBRIDGE_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
                       OFFICEBRIDGE_DATA_DIR=work, OFFICEBRIDGE_ALLOW_EMULATOR="true",
                       OFFICEBRIDGE_EMULATOR_URL=emu.url, OFFICEBRIDGE_LOG__LEVEL="warn")
            subprocess.run([BIN, "migrate"], env=env, check=True, capture_output=True)
            key = lambda role: subprocess.run([BIN, "apikeys", "create", "--role", role, "--name", f"bench-{role}"],
                                              env=env, check=True, capture_output=True, text=True).stdout.strip()
            admin, client = key("admin"), key("client")
            with Server(env) as s:
                conn = http.client.HTTPConnection("127.0.0.1", s.port)
                auth = {"authorization": f"Bearer {admin}"}
                status, data = call(conn, "POST", "/api/v1/tenants", {
                    "code": "DEMO", "tenant_id": TENANT, "client_id": CLIENT, "platform": "public_client",
                    "redirect_url": "http://localhost", "client_secret": SECRET, "authority": emu.url,
                    "graph_endpoint": emu.url}, auth)
                if status != 201:
                    raise SystemExit(f"tenant: {status} {data[:300]!r}")
                for i, user in enumerate(operators, 1):
                    status, data = call(conn, "PUT", f"/api/v1/operators/OP{i:02}",
                                        {"enabled": True, "tenant": "DEMO", "email": user}, auth)
                    if status not in (200, 201):
                        raise SystemExit(f"operator: {status} {data[:300]!r}")
                    sign_in(s.port, client, f"OP{i:02}", user)
                emu.delays()
                results["delays_ms"] = DELAYS
                results["concurrent"] = concurrent_phase(emu, s.port, client, user_token(emu, operators[0]),
                                                         args.queries)
                print(json.dumps({"concurrent": results["concurrent"]}), flush=True)
                results["hanging"] = hanging_phase(emu, s.port, client, 50)
                print(json.dumps({"hanging": results["hanging"]}), flush=True)
                results["typing"] = typing_phase(emu, s.port, client, args.typing_seconds)
                print(json.dumps({"typing": results["typing"]}), flush=True)
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "out", "contacts.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
