#!/usr/bin/env python3
"""Prints the GPU check's side-by-side table from the results `check.sh run` wrote.

    python3 tools/gpu/report.py RESULTS_DIR TRAIN_WORKLOAD GENERATE_WORKLOAD [STAGES_WORKLOAD]

RESULTS_DIR holds, per workload W, `ours-W.json` (`styleforge bench --json`),
`torch-W.json` (`bench_torch.py --json`, absent when PyTorch was skipped) and
`ours-W.peak` / `torch-W.peak` (peak GPU memory in MiB from nvidia-smi, or "-" on a CPU, where
the peak resident memory of each process is shown instead). Exits 1 when a StyleForge
workload has no result. A STAGES_WORKLOAD (generation timed by stage) adds a row per stage.
Standard library only.
"""

import json
import os
import sys

# Issue targets: StyleForge's time and memory over PyTorch's.
TARGETS = {"train": 1.2, "generate": 1.0, "stages": 0.9, "memory": 1.0}


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def peak(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
        return float(text)
    except (OSError, ValueError):
        return None


def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def side(results, workload, who):
    """(median ms, peak MiB, memory kind, optimizer, error) of one side of one workload."""
    data = load(os.path.join(results, f"{who}-{workload}.json"))
    if data is None:
        return None
    if who == "ours":
        r = (data.get("styleforge") or {}).get(workload) or {}
        if "error" in r:
            return {"error": r["error"].strip().splitlines()[-1]}
        ms = (r.get("timing") or {}).get("median_ms")
        stages = (r.get("timing") or {}).get("stages") or []
        rss = r.get("peak_rss_mb")
        optimizer = "StyleForge AdamW8bit" if workload.endswith("-8bit") else ""
    else:
        r = (data.get("workloads") or {}).get(workload) or {}
        if "error" in r:
            return {"error": r["error"]}
        ms = r.get("median_ms")
        stages = r.get("stages") or []
        rss = r.get("peak_rss_mb")
        optimizer = r.get("optimizer", "")
    stages = {s["name"]: s["median_ms"] for s in stages}
    gpu = peak(os.path.join(results, f"{who}-{workload}.peak"))
    if gpu is not None:
        return {"ms": ms, "mem": gpu, "mem_kind": "GPU", "optimizer": optimizer, "stages": stages}
    return {"ms": ms, "mem": rss, "mem_kind": "RSS", "optimizer": optimizer, "stages": stages}


def main():
    results, train, generate = sys.argv[1:4]
    stages = sys.argv[4] if len(sys.argv) > 4 else None
    print()
    print("precision: f32 on both sides (StyleForge's bench workloads have no bf16 mode yet)")
    head = f"{'workload':32s} {'ours ms':>10s} {'torch ms':>10s} {'time x':>7s} {'ours MiB':>9s} {'torch MiB':>9s} {'mem x':>6s}  memory"
    print(head)
    print("-" * len(head))
    notes = []
    failed = False
    workloads = [(train, TARGETS["train"]), (generate, TARGETS["generate"])]
    if stages:
        workloads.append((stages, TARGETS["stages"]))
    for workload, target in workloads:
        ours = side(results, workload, "ours")
        torch = side(results, workload, "torch")
        if ours is None or "error" in ours:
            print(f"{workload:32s} StyleForge failed: {(ours or {}).get('error', 'no result')}")
            failed = True
            continue
        if torch is not None and "error" in torch:
            notes.append(f"{workload}: PyTorch failed: {torch['error']}")
            torch = None
        t_ms = torch["ms"] if torch else None
        t_mem = torch["mem"] if torch else None
        ratio = ours["ms"] / t_ms if t_ms else None
        mem_ratio = ours["mem"] / t_mem if (t_mem and ours["mem"] is not None) else None
        print(
            f"{workload:32s} {fmt(ours['ms']):>10s} {fmt(t_ms):>10s} {fmt(ratio, 2):>7s} "
            f"{fmt(ours['mem'], 0):>9s} {fmt(t_mem, 0):>9s} {fmt(mem_ratio, 2):>6s}  {ours['mem_kind']}"
        )
        for name, ms in ours["stages"].items():
            t_stage = torch["stages"].get(name) if torch else None
            stage_ratio = ms / t_stage if t_stage else None
            print(f"{'  ' + name:32s} {fmt(ms):>10s} {fmt(t_stage):>10s} {fmt(stage_ratio, 2):>7s}")
        if torch is None:
            notes.append(f"{workload}: no PyTorch result (skipped or failed): no ratio")
        else:
            if torch["optimizer"]:
                notes.append(f"{workload}: PyTorch optimizer {torch['optimizer']}")
            if ratio is not None:
                ok = "met" if ratio <= target else "NOT met"
                notes.append(f"{workload}: time target <= {target}x PyTorch: {ok} ({ratio:.2f}x)")
            if mem_ratio is not None and ours["mem_kind"] == "GPU":
                ok = "met" if mem_ratio <= TARGETS["memory"] else "NOT met"
                notes.append(f"{workload}: peak GPU memory <= PyTorch's: {ok} ({mem_ratio:.2f}x)")
    for note in notes:
        print("  " + note)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
