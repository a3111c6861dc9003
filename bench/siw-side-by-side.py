#!/usr/bin/env python3
"""Side by side with Linux siw, in one guest run of the interop VM.

Boots the siw peer guest once (interop/siw-peer), copies the host-built iwperf into it, and
runs there, one after the other:
  - perftest over siw0 in loopback (server and client in the guest, rdma_cm, 10.0.2.15):
    ib_write_bw, ib_read_bw, ib_send_bw at 64 KiB and 1 MiB, ib_write_lat at 8 B;
  - `iwperf loopback` with the same tests, sizes and iteration counts (our stack over the
    guest's TCP on 127.0.0.1, next to plain TCP).
Prints the table of both and the ratio. The guest runs under emulation (TCG), so absolute
figures mean little; the ratio is the result.

Usage (after `cargo build --release --bin iwperf` and `interop/siw-peer/siw-peer build`):
    python3 bench/siw-side-by-side.py [--runs 3] [--json FILE] [--only write_lat ...]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIW_PEER = os.path.join(ROOT, "interop", "siw-peer", "siw-peer")
IWPERF = os.path.join(ROOT, "target", "release", "iwperf")

# (perftest tool, iwperf test, size, iterations)
CASES = [
    ("ib_write_bw", "write_bw", 65536, 3000),
    ("ib_write_bw", "write_bw", 1048576, 400),
    ("ib_read_bw", "read_bw", 65536, 3000),
    ("ib_read_bw", "read_bw", 1048576, 400),
    ("ib_send_bw", "send_bw", 65536, 3000),
    ("ib_write_lat", "write_lat", 8, 3000),
]


def guest_script(runs, variants, cases):
    lines = ["#!/bin/sh", "set -u", "ulimit -l unlimited 2>/dev/null", "ulimit -n 65536 2>/dev/null"]
    for tool, test, size, iters in cases:
        extra = "--report_gbits" if tool.endswith("_bw") else ""
        for r in range(runs):
            # The server may take more than a second to listen under emulation: the client
            # retries a refused connection (up to 5 times). Both are bounded in time: perftest
            # busy-polls without a timeout, so a lost peer would otherwise hang the run (a run
            # whose client or server was stopped has no result line and no figure).
            lines += [
                f"timeout 300 {tool} -R -d siw0 -F -s {size} -n {iters} {extra} > /tmp/srv.txt 2>&1 & S=$!",
                "sleep 1",
                f"echo '=== siw {test} {size} run {r}'",
                "for try in 1 2 3 4 5; do",
                f"  timeout 120 {tool} -R -d siw0 -F -s {size} -n {iters} {extra} 10.0.2.15 > /tmp/cli.txt 2>&1",
                "  grep -q 'Failed to connect' /tmp/cli.txt || break",
                "  kill -0 $S 2>/dev/null || break",
                "  sleep 1",
                "done",
                "cat /tmp/cli.txt",
                "wait $S",
                "sleep 0.3",
            ]
    for tool, test, size, iters in cases:
        for k, args in enumerate(variants):
            lines += [
                f"echo '=== iwarp{k} {test} {size}'",
                f"/host/iwperf loopback --tests {test}:{size} -n {iters} --runs {runs} --json {args} 2>&1",
            ]
    lines.append("echo '=== done'")
    return "\n".join(lines) + "\n"


def parse(out):
    """{(impl, test, size): [figures]}: Gbit/s for bandwidth, t_typical usec for latency."""
    res = {}
    cur = None
    expect_values = False
    for line in out.splitlines():
        m = re.match(r"=== (siw|iwarp\d*) (\w+) (\d+)", line)
        if m:
            cur = (m.group(1), m.group(2), int(m.group(3)))
            expect_values = False
            continue
        if cur is None:
            continue
        impl, test, size = cur
        if impl == "siw":
            if line.strip().startswith("#bytes"):
                expect_values = True
                continue
            if expect_values:
                f = line.split()
                if len(f) >= 5 and f[0] == str(size):
                    # bw: #bytes #iterations BW-peak BW-average MsgRate; lat: t_typical is column 5
                    v = float(f[3]) if test.endswith("_bw") else float(f[4])
                    res.setdefault(cur, []).append(v)
                    expect_values = False
        elif line.startswith("{"):
            try:
                j = json.loads(line)
            except json.JSONDecodeError:
                continue
            key = (impl if j.get("transport") == "iwarp" else "tcp", j["test"], int(j["size"]))
            if j.get("bw"):
                res.setdefault(key, []).append(float(j["bw"]["gbit_per_s"]))
            elif j.get("lat"):
                res.setdefault(key, []).append(float(j["lat"]["t_typical"]))
    return res


def med(v):
    if not v:
        return None, None
    m = statistics.median(v)
    return m, ((max(v) - min(v)) / m if m else 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="also write the medians as JSON")
    ap.add_argument("--timeout", type=int, default=2400, help="guest command limit, s")
    ap.add_argument("--variant", action="append", metavar="ARGS",
                    help="iwperf loopback options to compare (repeatable; default: --no-crc, matching "
                         "siw's default of CRC off)")
    ap.add_argument("--only", action="append", metavar="TEST",
                    help="run only this iwperf test (repeatable, e.g. --only write_lat)")
    a = ap.parse_args()
    cases = [c for c in CASES if not a.only or c[1] in a.only]
    if not cases:
        sys.exit(f"--only: none of {a.only} is one of {sorted({c[1] for c in CASES})}")
    variants = a.variant or ["--no-crc"]
    if not os.access(IWPERF, os.X_OK):
        sys.exit("build first: cargo build --release --bin iwperf")
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "side-by-side.sh")
        with open(script, "w", encoding="utf-8") as f:
            f.write(guest_script(a.runs, variants, cases))
        cmd = [SIW_PEER, "run", "--timeout", str(a.timeout), "--put", IWPERF, "--put", script,
               "--", "sh /host/side-by-side.sh"]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=a.timeout + 300)
    out = p.stdout + p.stderr
    if p.returncode != 0 or "=== done" not in out:
        sys.stderr.write(out[-6000:])
        sys.exit(f"guest run failed (status {p.returncode})")
    res = parse(out)
    print(f"side by side in one guest run (QEMU TCG, 2 vCPUs), median of {a.runs}; bandwidth Gbit/s, "
          "latency usec (t_typical)")
    summary = []
    ok = True

    def fmt(x, w=8):
        return f"{x:>{w}.3f}" if x is not None else f"{'-':>{w}}"

    def pct(x):
        return f"{x * 100:>5.0f}%" if x is not None else f"{'-':>6}"

    for k, args in enumerate(variants):
        print(f"\niwperf loopback {args}")
        print(f" {'test':<10} {'size':>8}   {'siw':>8} {'spread':>6}   {'iWARP':>8} {'spread':>6}   "
              f"{'guest TCP':>9}   {'iWARP/siw':>9}")
        for _, test, size, _ in cases:
            s, ss = med(res.get(("siw", test, size), []))
            i, si = med(res.get((f"iwarp{k}", test, size), []))
            t, _ = med(res.get(("tcp", test, size), []))
            ratio = (i / s) if (s and i) else None
            lat = not test.endswith("_bw")
            better = ratio is not None and ((ratio <= 1.0) if lat else (ratio >= 1.0))
            ok &= better
            print(f" {test:<10} {size:>8}   {fmt(s)} {pct(ss)}   {fmt(i)} {pct(si)}   {fmt(t, 9)}   "
                  f"{fmt(ratio, 9)}  {'ours ' + ('lower' if lat else 'higher') if better else 'siw ahead'}")
            summary.append({"variant": args, "test": test, "size": size, "siw": s, "siw_spread": ss,
                            "iwarp": i, "iwarp_spread": si, "guest_tcp": t, "iwarp_over_siw": ratio})
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
