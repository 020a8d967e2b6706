#!/usr/bin/env python3
"""Per-kernel time table from an Nsight Compute CSV (ncu --csv --metrics gpu__time_duration.sum).

Groups the launches by kernel name and grid, prints count, total and mean µs and the share of the
whole, largest first; with --order also the launches in order (the forward's op sequence), so a
kernel used by several ops (the linear) can be told apart by position and grid.
  python3 benchmarks/ncu-kernel-table.py ncu.csv [--top 40] [--order N]
"""
import csv
import sys
from collections import defaultdict


def main():
    args = sys.argv[1:]
    top = int(args[args.index("--top") + 1]) if "--top" in args else 40
    order = int(args[args.index("--order") + 1]) if "--order" in args else 0
    rows = []
    with open(args[0], newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        v = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "ns")
        us = v / 1000 if unit == "nsecond" or unit == "ns" else v if unit in ("usecond", "us") else v * 1000
        name = r["Kernel Name"].split("(")[0][:60]
        rows.append((int(r["ID"]), name, r.get("Grid Size", ""), r.get("Block Size", ""), us))
    total = sum(r[4] for r in rows) or 1.0
    agg = defaultdict(lambda: [0, 0.0])
    for _, name, grid, _, us in rows:
        a = agg[(name, grid)]
        a[0] += 1
        a[1] += us
    print(f"{len(rows)} launches, {total:.1f} µs in all")
    print(f"{'kernel':60} {'grid':>16} {'n':>5} {'total µs':>10} {'mean µs':>9} {'%':>6}")
    for (name, grid), (n, t) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"{name:60} {grid:>16} {n:5d} {t:10.1f} {t / n:9.2f} {100 * t / total:6.2f}")
    if order:
        print("\nlaunches in order (last %d):" % order)
        for i, name, grid, block, us in rows[-order:]:
            print(f"{i:6d} {name:60} {grid:>16} {block:>12} {us:9.2f}")


if __name__ == "__main__":
    main()
