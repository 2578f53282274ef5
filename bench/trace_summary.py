#!/usr/bin/env python3
"""Where the GPU time of traced training steps goes, from a Chrome trace.

Reads a trace written by `hydra bench step --trace FILE` (LibTorch's Kineto profiler) or by
bench/torch_baseline.py --trace (torch.profiler), and prints per step: kernel launches, the
GPU's busy time (the union of kernel, copy and memset intervals) against the traced span, and
the kernel time by category (matrix products, attention, hydra's own kernels, Triton kernels
that torch.compile generated, ATen elementwise and reduction kernels, copies, ...), plus the
longest kernels. --json FILE writes the same as JSON. For an eager trace (no CUDA graphs) it
also says which operator launched each kernel, copy and memset outside the matrix products and
hydra's kernels: the innermost CPU operator around the launch call, with the nearest enclosing
operator that is not an ATen one (an autograd node, a custom function) — where the small
kernels and memsets come from.

    bench/trace_summary.py TRACE --steps N [--json FILE] [--label NAME]
"""
import argparse
import json
import re
import sys

# First match wins; the names are what CUDA reports (mangled or demangled).
CATEGORIES = [
    ("attention", re.compile(r"flash|fmha|attention|latent_attn|LatentAttention|sdpa", re.I)),
    ("matmul", re.compile(r"gemm|xmma|cutlass|nvjet|cublas|matmul|splitKreduce", re.I)),
    ("hydra kernels", re.compile(r"hydra(::|\d)kernels|hydra7kernels")),
    ("triton (torch.compile)", re.compile(r"^triton_")),
    ("optimizer", re.compile(r"adam|multi_tensor|foreach", re.I)),
    ("reduction", re.compile(r"reduce_kernel|Reduce|softmax|norm|logsumexp", re.I)),
    ("elementwise", re.compile(r"elementwise|vectorized|unrolled|CatArray|index|gather|scatter|fill", re.I)),
    ("nccl", re.compile(r"nccl", re.I)),
]


def category(name, cat):
    if cat == "gpu_memcpy":
        return "copy"
    if cat == "gpu_memset":
        return "memset"
    for label, pattern in CATEGORIES:
        if pattern.search(name):
            return label
    return "other"


def busy_time(intervals):
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def launching_ops(events, gpu):
    """(innermost operator, nearest non-ATen ancestor) of each GPU event's launch call, by the
    launch's correlation id and the CPU operators open on its thread at that moment."""
    runtime = {e["args"]["correlation"]: e for e in events
               if e.get("ph") == "X" and e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})}
    ops_by_tid = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "user_annotation"):
            ops_by_tid.setdefault(e["tid"], []).append(e)
    calls_by_tid = {}
    for r in runtime.values():
        calls_by_tid.setdefault(r["tid"], []).append(r)
    owner = {}  # correlation -> (innermost, ancestor)
    for tid, calls in calls_by_tid.items():
        ops = sorted(ops_by_tid.get(tid, []), key=lambda e: (e["ts"], -e["dur"]))
        stack, i = [], 0
        for call in sorted(calls, key=lambda e: e["ts"]):
            while i < len(ops) and ops[i]["ts"] <= call["ts"]:
                while stack and stack[-1]["ts"] + stack[-1]["dur"] < ops[i]["ts"]:
                    stack.pop()
                stack.append(ops[i])
                i += 1
            while stack and stack[-1]["ts"] + stack[-1]["dur"] < call["ts"]:
                stack.pop()
            open_ops = [o for o in stack if o["ts"] + o["dur"] >= call["ts"]]
            if not open_ops:
                continue
            inner = open_ops[-1]["name"]
            dims = open_ops[-1].get("args", {}).get("Input Dims")
            if dims:
                inner += " " + json.dumps([d for d in dims if d], separators=(",", ":"))
            outer = next((o["name"] for o in reversed(open_ops) if not o["name"].startswith("aten::")), "")
            owner[call["args"]["correlation"]] = (inner, outer)
    out = {}
    for e in gpu:
        corr = e.get("args", {}).get("correlation")
        if corr not in owner:
            continue
        out[id(e)] = owner[corr]
    return out


def summarize(path, steps, label):
    with open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    launches = [e for e in events if e.get("ph") == "X" and e.get("cat") == "cuda_runtime"
                and re.search(r"LaunchKernel|GraphLaunch", e.get("name", ""))]
    if not gpu:
        sys.exit(f"trace_summary: no GPU events in {path}")
    first = min(e["ts"] for e in gpu)
    last = max(e["ts"] + e["dur"] for e in gpu)
    by_cat, by_kernel = {}, {}
    for e in gpu:
        c = category(e["name"], e["cat"])
        by_cat.setdefault(c, [0.0, 0])
        by_cat[c][0] += e["dur"]
        by_cat[c][1] += 1
        k = by_kernel.setdefault(e["name"], [0.0, 0, c])
        k[0] += e["dur"]
        k[1] += 1
    per = 1.0 / steps / 1e3  # us over all steps -> ms per step
    busy = busy_time([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    out = {
        "label": label, "trace": path, "steps": steps,
        "span_ms": (last - first) * per,
        "gpu_busy_ms": busy * per,
        "kernels_per_step": sum(1 for e in gpu if e["cat"] == "kernel") / steps,
        "launch_calls_per_step": len(launches) / steps,
        "by_category_ms": {c: round(v[0] * per, 3) for c, v in sorted(by_cat.items(), key=lambda kv: -kv[1][0])},
        "by_category_count": {c: v[1] / steps for c, v in sorted(by_cat.items(), key=lambda kv: -kv[1][0])},
        "top_kernels": [{"name": n[:160], "category": v[2], "ms": round(v[0] * per, 3), "count": v[1] / steps}
                        for n, v in sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:60]],
    }
    owners = launching_ops(events, gpu)
    if owners:
        by_op = {}
        for e in gpu:
            c = category(e["name"], e["cat"])
            if c in ("matmul", "hydra kernels", "attention") or id(e) not in owners:
                continue
            inner, outer = owners[id(e)]
            v = by_op.setdefault((c, inner, outer), [0.0, 0])
            v[0] += e["dur"]
            v[1] += 1
        out["small_kernels_by_op"] = [
            {"category": c, "op": inner, "within": outer, "ms": round(v[0] * per, 3), "count": v[1] / steps}
            for (c, inner, outer), v in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:60]]
    return out


def print_summary(s):
    print(f"{s['label']}: {s['steps']} steps traced; per step: span {s['span_ms']:.2f} ms, GPU busy "
          f"{s['gpu_busy_ms']:.2f} ms ({100 * s['gpu_busy_ms'] / s['span_ms']:.0f}%), "
          f"{s['kernels_per_step']:.0f} kernels, {s['launch_calls_per_step']:.0f} launch calls")
    for c, ms in s["by_category_ms"].items():
        print(f"  {c:24s} {ms:9.2f} ms  {s['by_category_count'][c]:7.0f} per step")
    print("  longest kernels (ms per step, launches per step):")
    for k in s["top_kernels"][:12]:
        print(f"    {k['ms']:8.2f} {k['count']:6.0f}  [{k['category']}] {k['name'][:110]}")
    if s.get("small_kernels_by_op"):
        print("  other kernels, copies and memsets by the operator that launched them (ms, launches per step):")
        for k in s["small_kernels_by_op"][:25]:
            print(f"    {k['ms']:8.2f} {k['count']:6.0f}  [{k['category']}] {k['op'][:90]} < {k['within'][:60]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, required=True, help="how many steps the trace holds")
    ap.add_argument("--label", default="trace")
    ap.add_argument("--json")
    args = ap.parse_args()
    s = summarize(args.trace, args.steps, args.label)
    print_summary(s)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(s, f, indent=1)
        import os
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
