#!/usr/bin/env python3
"""Bandwidth against message size from `iwperf loopback --sweep --json` output.

Usage:
    cargo run --release --bin iwperf -- loopback --sweep --runs 3 --json > bench/sweep.jsonl
    python3 bench/plot.py bench/sweep.jsonl bench/bandwidth.png

Reads the JSON lines (other lines are ignored), takes the median Gbit/s of every
(test, transport, size), and draws iWARP RDMA Write, Read and Send next to raw TCP. TCP is
measured next to every iWARP run; its median over all of them is one line. Also prints the
table of medians and iWARP/TCP ratios, each against the TCP runs of the same row (measured
beside it, so a busy spell of the machine hits both). Needs matplotlib (`pip install matplotlib`).
"""

import json
import statistics
import sys
from collections import defaultdict


def load(path):
    runs = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                j = json.loads(line)
            except json.JSONDecodeError:
                continue
            bw = j.get("bw")
            if not bw or j.get("bidirectional"):
                # a -b row's "bw" is one direction of two: not a point of these curves
                continue
            v = float(bw["gbit_per_s"])
            if j["transport"] == "tcp":
                runs[("tcp", int(j["size"]))].append(v)
                # the TCP runs of the same row, for that row's ratio
                runs[("tcp:" + j["test"], int(j["size"]))].append(v)
            else:
                runs[(j["test"], int(j["size"]))].append(v)
    return runs


def summarize(runs):
    """(series, size) -> (median, spread, n)."""
    out = {}
    for key, v in runs.items():
        m = statistics.median(v)
        spread = (max(v) - min(v)) / m if m > 0 else 0.0
        out[key] = (m, spread, len(v))
    return out


def size_label(s):
    if s >= 1 << 20:
        return f"{s >> 20} MiB"
    if s >= 1 << 10:
        return f"{s >> 10} KiB"
    return f"{s} B"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    stats = summarize(load(sys.argv[1]))
    if not stats:
        sys.exit("no bandwidth JSON lines in " + sys.argv[1])
    series = [
        ("write_bw", "iWARP RDMA Write"),
        ("read_bw", "iWARP RDMA Read"),
        ("send_bw", "iWARP Send"),
        ("tcp", "raw TCP (write()/read() of each size)"),
    ]
    sizes = sorted({s for (_, s) in stats})

    print(f"{'size':>9}  " + "  ".join(f"{name:>16}" for name, _ in series) + "   W/TCP  R/TCP  S/TCP")
    for s in sizes:
        cells = []
        for name, _ in series:
            m = stats.get((name, s))
            cells.append(f"{m[0]:>9.2f} ±{m[1] * 100:>3.0f}%" if m else f"{'-':>16}")
        ratios = []
        for name in ("write_bw", "read_bw", "send_bw"):
            m = stats.get((name, s))
            tcp = stats.get(("tcp:" + name, s), stats.get(("tcp", s), (0.0, 0.0, 0)))[0]
            ratios.append(f"{m[0] / tcp:>5.2f}" if m and tcp > 0 else "    -")
        print(f"{size_label(s):>9}  " + "  ".join(cells) + "   " + "  ".join(ratios))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    styles = {"write_bw": "o-", "read_bw": "s-", "send_bw": "^-", "tcp": "k--"}
    for name, label in series:
        xs = [s for s in sizes if (name, s) in stats]
        if not xs:
            continue
        ys = [stats[(name, s)][0] for s in xs]
        lo = [stats[(name, s)][0] * (1 - stats[(name, s)][1] / 2) for s in xs]
        hi = [stats[(name, s)][0] * (1 + stats[(name, s)][1] / 2) for s in xs]
        ax.plot(xs, ys, styles[name], label=label)
        ax.fill_between(xs, lo, hi, alpha=0.12)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([size_label(s) for s in sizes], rotation=30)
    ax.set_xlabel("message size")
    ax.set_ylabel("Gbit/s (median; band = spread)")
    ax.set_title("iwperf loopback --sweep over 127.0.0.1")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2])
    print("wrote " + sys.argv[2])


if __name__ == "__main__":
    main()
