#!/usr/bin/env python3
"""Prints the median of every criterion benchmark under target/criterion as a
Markdown table, so docs/BENCHMARKS.md quotes medians from one run."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
rows = []
for est in sorted(root.glob("**/new/estimates.json")):
    name = str(est.parent.parent.relative_to(root))
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    rows.append((name, median_ns))

def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"

print("| benchmark | median |")
print("|---|---|")
for name, ns in rows:
    print(f"| `{name}` | {fmt(ns)} |")
med = dict(rows)
v, f = med.get("durable/verify_offline_wrong_try"), med.get("durable/fsync_floor_4k_write")
if v and f:
    print(f"\nverify / fsync floor = {v / f:.2f}x")
