#!/usr/bin/env python3
"""Medians and spreads of `mqws-load --json` records of repeated runs of one scenario.

    python3 benches/median.py benches/out/e-mqtt-ws-qos0-run*-STAMP.json

Per phase: median, min and max over the runs of published/s, delivered/s, p50 and p99 latency,
peak RSS, server CPU and other CPU; the runs' missing deliveries and log checks; then the median
ratio of each mqws phase over its Mosquitto counterpart (ratio of medians). Runs in which other
processes used 15% of a core or more in a phase are listed and left out of that phase's figures.
"""
import json
import statistics
import sys

OTHER_MAX = 15.0
PAIRS = [("mqtt-ws", "mosquitto-mqtt-ws"), ("ws", "mosquitto-ws"), ("baseline", "mosquitto-mqtt")]
FIELDS = [
    ("pub/s", lambda p: p["publish_rate"]),
    ("deliv/s", lambda p: p["delivered_rate"]),
    ("p50 µs", lambda p: p["latency"]["p50_us"]),
    ("p99 µs", lambda p: p["latency"]["p99_us"]),
    ("RSS MiB", lambda p: (p["server_peak_rss_kib"] or 0) / 1024),
    ("srv %", lambda p: p["server_cpu_pct"] or 0),
    ("gen %", lambda p: p["loadgen_cpu_pct"] or 0),
    ("other %", lambda p: p["other_cpu_pct"] or 0),
]


def main(paths):
    phases = {}
    for path in paths:
        with open(path) as f:
            rec = json.load(f)
        for p in rec["phases"]:
            phases.setdefault(p["phase"], []).append((path, p))
    med = {}
    print("| phase | runs kept | " + " | ".join(f"{n} median (min–max)" for n, _ in FIELDS)
          + " | missing per run | logged − published (QoS 1: − acked) per run |")
    print("|---" * (len(FIELDS) + 4) + "|")
    for name, runs in phases.items():
        kept = [p for _, p in runs if (p["other_cpu_pct"] or 0) < OTHER_MAX]
        dropped = [path for path, p in runs if (p["other_cpu_pct"] or 0) >= OTHER_MAX]
        if dropped:
            print(f"<!-- {name}: left out (other CPU ≥ {OTHER_MAX}%): {' '.join(dropped)} -->")
        if not kept:
            continue
        cells = []
        med[name] = {}
        for label, get in FIELDS:
            vals = [get(p) for p in kept]
            m = statistics.median(vals)
            med[name][label] = m
            cells.append(f"{m:,.0f} ({min(vals):,.0f}–{max(vals):,.0f})")
        missing = ", ".join(str(p["missing"]) for p in kept)
        qos1 = any(p["acked"] for p in kept)
        logged = ", ".join(
            "—" if p.get("logged") is None
            else str(p["logged"] - (p["acked"] if qos1 else p["published"]))
            for p in kept
        )
        print(f"| {name} | {len(kept)}/{len(runs)} | " + " | ".join(cells)
              + f" | {missing} | {logged} |")
    for a, b in PAIRS:
        if a in med and b in med:
            r = [f"{label} {med[a][label] / med[b][label]:.2f}×"
                 for label, _ in FIELDS[:4] if med[b][label]]
            print(f"\n{a} ÷ {b} (medians): " + ", ".join(r))


if __name__ == "__main__":
    main(sys.argv[1:])
