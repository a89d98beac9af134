#!/usr/bin/env python3
"""Median per operation of critest --benchmark's JSON results (lifecycle benchmarks).

Usage: bench-summary.py DIR   (the --benchmarking-output-dir of the run)
"""
import json
import pathlib
import statistics
import sys

for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    data = json.loads(path.read_text())
    names = data.get("operationsNames")
    points = data.get("datapoints") or []
    if not names or not points:
        continue
    print(f"{path.name} ({len(points)} runs, {data.get('numParallel', 1)} in parallel)")
    for i, name in enumerate(names):
        ms = [p["operationsDurationsNs"][i] / 1e6 for p in points if len(p["operationsDurationsNs"]) > i]
        print(f"  {name:<16} median {statistics.median(ms):8.2f} ms   min {min(ms):8.2f}   max {max(ms):8.2f}")
