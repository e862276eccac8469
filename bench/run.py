#!/usr/bin/env python3
"""Export benchmark (issue 3). Not part of the test suite.

Measures, in one run on this machine:
  ours   officebridge export (NDJSON -> XLSX through the CLI, parsing included)
  bare   examples/bench_bare.rs: rust_xlsxwriter called directly, constant memory,
         a format set on each cell (reference a)
  python Python XlsxWriter with constant_memory (reference b)
Wall time and peak RSS come from GNU time. Runs alternate their order so drift and
the other core's load fall on all of them alike. Then: ours at 100k rows (peak RSS must be
flat in N), and /healthz latency while the server exports 1M rows over HTTP.

Usage: python3 bench/run.py [--rows 1000000] [--runs 3] [--skip-python]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import data  # noqa: E402


def sh(cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def timed(cmd):
    """(wall seconds, peak RSS MiB, CPU seconds user + system) of one command."""
    res = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S"] + cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr}")
    wall, rss_kib, user, system = res.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss_kib) / 1024, float(user) + float(system)


def summary(samples):
    walls = [w for w, _, _ in samples]
    rss = [r for _, r, _ in samples]
    cpu = [c for _, _, c in samples]
    med = statistics.median(walls)
    return {
        "runs": len(samples),
        "median_s": round(med, 2),
        "min_s": round(min(walls), 2),
        "max_s": round(max(walls), 2),
        "spread_pct": round(100 * (max(walls) - min(walls)) / med, 1),
        "peak_rss_mib": round(max(rss), 1),
        # Above the wall time when a writer uses more than one core (ours deflates in parallel).
        "median_cpu_s": round(statistics.median(cpu), 2),
    }


def instructions(cmd):
    """Instructions executed (valgrind callgrind): repeatable where wall time is noisy."""
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg"] + cmd, capture_output=True, text=True)
        for line in res.stderr.splitlines():
            if "Collected :" in line:
                return int(line.split(":")[-1].strip())
    raise SystemExit(f"callgrind failed: {res.stderr[-500:]}")


def healthz_during_http_export(binary, ndjson):
    """Starts `serve --dev`, posts the NDJSON, and times /healthz every 10 ms meanwhile."""
    work = tempfile.mkdtemp(prefix="ob-bench-")
    server = subprocess.Popen([binary, "serve", "--dev", "--listen", "127.0.0.1:0"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = None
    for line in server.stdout:
        if line.startswith("officebridge listening on "):
            base = line.split()[-1]
            break
    keys = json.load(open(os.path.join(work, "data", "dev-keys.json")))
    result = {}

    def export():
        t0 = time.time()
        res = subprocess.run(
            ["curl", "-s", "-o", os.path.join(work, "http.xlsx"), "-w", "%{http_code}", "-H", "Authorization: Bearer " + keys["client"],
             "-H", "Content-Type: application/x-ndjson", "-T", ndjson, "-X", "POST", base + "/api/v1/exports"],
            capture_output=True, text=True)
        result["status"] = res.stdout
        result["seconds"] = round(time.time() - t0, 2)

    t = threading.Thread(target=export)
    t.start()
    latencies = []
    while t.is_alive():
        t0 = time.perf_counter()
        urllib.request.urlopen(base + "/healthz", timeout=5).read()
        latencies.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)
    t.join()
    server.terminate()
    server.wait()
    latencies.sort()
    return {
        "export_http_status": result["status"],
        "export_seconds": result["seconds"],
        "healthz_probes": len(latencies),
        "healthz_p50_ms": round(latencies[len(latencies) // 2], 2),
        "healthz_p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
        "healthz_max_ms": round(latencies[-1], 2),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-python", action="store_true")
    ap.add_argument("--callgrind-rows", type=int, default=50_000, help="0 to skip the instruction count")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    if not args.skip_python:
        try:
            import xlsxwriter  # noqa: F401
        except ImportError:
            sh([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "XlsxWriter"])
    sh(["cargo", "build", "--release", "--quiet", "--bin", "officebridge", "--example", "bench_bare"], cwd=ROOT)
    ours_bin = os.path.join(ROOT, "target", "release", "officebridge")
    bare_bin = os.path.join(ROOT, "target", "release", "examples", "bench_bare")

    small = max(args.rows // 10, 1)
    big_file = os.path.join(OUT, f"grid-{args.rows}.ndjson")
    small_file = os.path.join(OUT, f"grid-{small}.ndjson")
    for n, path in ((args.rows, big_file), (small, small_file)):
        if not os.path.exists(path):
            data.write_ndjson(n, path)

    cmds = {
        "ours": [ours_bin, "export", big_file, "-o", os.path.join(OUT, "ours.xlsx")],
        "bare": [bare_bin, str(args.rows), os.path.join(OUT, "bare.xlsx")],
        "python": [sys.executable, os.path.join(ROOT, "bench", "python_xlsxwriter.py"), str(args.rows), os.path.join(OUT, "python.xlsx")],
    }
    order = ["ours", "bare"] + ([] if args.skip_python else ["python"])
    samples = {k: [] for k in order}
    for run in range(args.runs):
        for name in (order if run % 2 == 0 else list(reversed(order))):
            samples[name].append(timed(cmds[name]))
            wall, rss, cpu = samples[name][-1]
            print(f"run {run + 1} {name}: {wall:.2f} s, {rss:.1f} MiB, {cpu:.2f} s CPU", flush=True)
    small_samples = [timed([ours_bin, "export", small_file, "-o", os.path.join(OUT, "ours-small.xlsx")]) for _ in range(args.runs)]

    results = {k: summary(v) for k, v in samples.items()}
    results["ours_small"] = summary(small_samples)
    results["ratio_ours_over_bare"] = round(results["ours"]["median_s"] / results["bare"]["median_s"], 3)
    results["ratio_ours_over_bare_per_run"] = [round(o[0] / b[0], 3) for o, b in zip(samples["ours"], samples["bare"])]
    if "python" in results:
        results["speedup_over_python"] = round(results["python"]["median_s"] / results["ours"]["median_s"], 2)
    results["rss_small_vs_big_pct"] = round(100 * abs(results["ours"]["peak_rss_mib"] - results["ours_small"]["peak_rss_mib"]) / results["ours"]["peak_rss_mib"], 1)
    if args.callgrind_rows:
        cg_file = os.path.join(OUT, f"grid-{args.callgrind_rows}.ndjson")
        if not os.path.exists(cg_file):
            data.write_ndjson(args.callgrind_rows, cg_file)
        ours_i = instructions([ours_bin, "export", cg_file, "-o", os.path.join(OUT, "cg-ours.xlsx")])
        bare_i = instructions([bare_bin, str(args.callgrind_rows), os.path.join(OUT, "cg-bare.xlsx")])
        results["instructions"] = {"rows": args.callgrind_rows, "ours": ours_i, "bare": bare_i, "ratio_ours_over_bare": round(ours_i / bare_i, 3)}
    results["http"] = healthz_during_http_export(ours_bin, big_file)
    results["rows"] = args.rows
    results["file_bytes"] = {k: os.path.getsize(c[-1]) for k, c in cmds.items() if k in samples}
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
