#!/usr/bin/env python3
"""`hydra diagnose --sections speed` on the GPU (`small`, bf16): the model pass's measured peak
is within 10% of hydra info's prediction for that batch and sequence (weights, activations and
buffers), at every grid point.

  check_diagnose_memory.py HYDRA_BIN SOURCE_DIR

The pass must be the training step's forward and backward: a pass that also returns the
logits of the whole batch (the trainer never asks for them) holds about 0.5 MB a token more
than the trainer does, and its peak was 1.5-1.7x the prediction before the diagnose pass asked
for the loss alone.
"""
import json
import os
import subprocess
import sys
import tempfile

HYDRA, SOURCE = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "report")
    run = subprocess.run([HYDRA, "diagnose", "--config", os.path.join(SOURCE, "configs", "small.yaml"),
                          "--set", "train.device=cuda", "--set", "train.dtype=bf16", "--sections", "speed",
                          "--batches", "1,4", "--seqs", "1024", "--repeats", "2", "--out", out],
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"FAIL: hydra diagnose exit {run.returncode}\n{run.stdout}{run.stderr}")
    report = json.load(open(os.path.join(out, "report.json")))
    models = [r for r in report["speed"] if r["what"] == "model"]
    if len(models) != 2:
        sys.exit(f"FAIL: {len(models)} model points, expected 2")
    for r in models:
        peak, predicted = r.get("peak_gb"), r.get("predicted_gb")
        print(f"model B {r['batch']} S {r['seq']}: peak {peak} GB, predicted {predicted} GB")
        if not peak or not predicted or abs(peak - predicted) > 0.10 * peak:
            sys.exit(f"FAIL: model B {r['batch']} S {r['seq']}: measured peak {peak} GB, predicted {predicted} GB "
                     "(more than 10% apart)")
print("ok")
