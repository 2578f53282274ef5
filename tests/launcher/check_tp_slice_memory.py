#!/usr/bin/env python3
"""A tensor-parallel rank's peak memory on the GPU against hydra info's prediction: `hydra bench
step --tp-slice 3` (one process computing what a rank of tp 3 computes) and the whole model, on
`small` in bf16 at batch 8 x 1024 with the GPT-2 vocabulary, each within 10% of the prediction.
tp 3: `small`'s CCQA layers have 3 query heads (the `heads` layout: 12 heads / C 4), one a rank,
and their one key/value head is replicated.

  check_tp_slice_memory.py HYDRA_BIN SOURCE_DIR

Before the training loss under tp went through the chunked head (model/linear_cross_entropy.h,
VocabShard; 2026-12-05), a tp rank held the logits of the whole micro-batch and its float32
copies, and its peak was 29-32% above the prediction (docs/PERF.md).
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

HYDRA, SOURCE = sys.argv[1], sys.argv[2]


def run(args, what):
    r = subprocess.run([HYDRA, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: {what}: exit {r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r


with tempfile.TemporaryDirectory() as tmp:
    # A corpus of the project's own English: its docs (a few hundred thousand GPT-2 tokens).
    os.makedirs(os.path.join(tmp, "text"))
    for path in glob.glob(os.path.join(SOURCE, "docs", "*.md")):
        name = os.path.splitext(os.path.basename(path))[0] + ".txt"  # (data prepare reads .txt)
        shutil.copy(path, os.path.join(tmp, "text", name))
    run(["data", "prepare", "--input", os.path.join(tmp, "text"), "--output", os.path.join(tmp, "tokens"),
         "--val-fraction", "0.2"], "data prepare")
    failures = []
    for name, extra in (("whole model", []), ("tp-slice 3", ["--tp-slice", "3"])):
        out = os.path.join(tmp, "bench.json")
        run(["bench", "step", "--config", os.path.join(SOURCE, "configs", "small.yaml"),
             "--set", f"data.path={tmp}/tokens", "--set", "train.device=cuda", "--set", "train.dtype=bf16",
             "--set", "train.seq_len=1024", "--set", "train.global_batch=8", "--set", "train.micro_batch=8",
             "--steps", "2", "--warmup", "1", "--json", out, *extra], f"bench step ({name})")
        r = json.load(open(out))
        peak, predicted = r["peak_allocated_gb"], r["predicted_peak_gb"]
        print(f"{name}: peak {peak:.2f} GB, hydra info {predicted:.2f} GB ({100 * (predicted / peak - 1):+.1f}%)")
        if abs(predicted - peak) > 0.10 * peak:
            failures.append(f"{name}: measured peak {peak:.2f} GB, predicted {predicted:.2f} GB (more than 10% apart)")
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
print("ok")
