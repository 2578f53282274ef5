#!/usr/bin/python3
"""scripts/quality-compare.py on the CPU: tiny's hybrid and MHA configs (bytes vocabulary, 64-token
sequences) trained for the same tokens on the GPL text with two seeds each.

  check_quality.py HYDRA_BIN SOURCE_DIR

- every figure of quality.json read back from the runs themselves: each final val_loss is the
  last validation row of that run's metrics file, the curve its validation rows, the tokens its
  last row's; params from `hydra info`; the seeds differ (different losses) and the summary's
  mean, min and max are theirs;
- the KV cache per token orders MHA > GQA (tiny-gqa, from hydra info) > the hybrid (MQA, CCQA and
  MLA layers cache less);
- quality.md holds a row per model; val_loss.png is a PNG (when matplotlib is there);
- a non-empty --out is refused (exit 2) and left as it was.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HYDRA, SOURCE = sys.argv[1], sys.argv[2]
SCRIPT = os.path.join(SOURCE, "scripts", "quality-compare.py")


def fail(message, run=None):
    sys.exit(f"FAIL: {message}" + (f"\n{run.stdout}{run.stderr}" if run else ""))


def info(config, sets):
    run = subprocess.run([HYDRA, "info", "--config", config, *[w for s in sets for w in ("--set", s)], "--json"],
                         capture_output=True, text=True)
    if run.returncode != 0:
        fail(f"hydra info {config}", run)
    return json.loads(run.stdout)["model"]


def main():
    root = tempfile.mkdtemp(prefix="hydra_quality_")
    try:
        os.makedirs(os.path.join(root, "text"))
        shutil.copy("/usr/share/common-licenses/GPL-3", os.path.join(root, "text", "gpl3.txt"))
        tokens = os.path.join(root, "tokens")
        prep = subprocess.run([HYDRA, "data", "prepare", "--input", os.path.join(root, "text"), "--output", tokens,
                               "--tokenizer", "bytes", "--val-fraction", "0.1"], capture_output=True, text=True)
        if prep.returncode != 0:
            fail("data prepare", prep)
        sets = ["data.tokenizer=bytes", "model.vocab_size=256", "train.seq_len=64"]
        configs = {n: os.path.join(SOURCE, "configs", f) for n, f in (("hybrid", "tiny.yaml"), ("mha", "tiny-mha.yaml"))}
        gqa_config = os.path.join(SOURCE, "configs", "tiny-gqa.yaml")
        out = os.path.join(root, "cmp")
        base = ["/usr/bin/python3", SCRIPT, "--hydra", HYDRA, "--data", tokens, "--steps", "12", "--eval-every", "6",
                *[w for s in sets for w in ("--set", s)]]
        run = subprocess.run([*base, "--out", out, "--seeds", "1,2", *[f"{n}={c}" for n, c in configs.items()]],
                             capture_output=True, text=True, timeout=600)
        if run.returncode != 0 or "[4/4] mha seed 2" not in run.stdout or "left)" not in run.stdout:
            fail(f"quality-compare exit {run.returncode}", run)
        report = json.load(open(os.path.join(out, "quality.json")))
        if report["all_ran"] is not True or len(report["runs"]) != 4:
            fail(f"runs {report['runs']}")
        for r in report["runs"]:
            rows = [json.loads(x) for x in open(os.path.join(out, r["dir"], "metrics.jsonl")) if x.strip()]
            val = [[x["step"], x["val_loss"]] for x in rows if "val_loss" in x]
            if r["val_curve"] != val or r["final_val_loss"] != val[-1][1] or [s for s, _ in val] != [6, 12]:
                fail(f"{r['name']} seed {r['seed']}: curve {r['val_curve']} against the metrics' {val}")
            if r["tokens"] != rows[-1]["tokens"] or r["tokens"] != 12 * 8 * 64:
                fail(f"{r['name']}: tokens {r['tokens']}, 12 steps of 8 x 64 expected")
            if r["params"] != info(configs[r["name"]], sets)["params_total"]:
                fail(f"{r['name']}: params {r['params']} against hydra info")
        summ = report["summary"]
        hybrid = [r["final_val_loss"] for r in report["runs"] if r["name"] == "hybrid"]
        if hybrid[0] == hybrid[1]:
            fail(f"seeds 1 and 2 gave the same loss {hybrid}")
        s = summ["hybrid"]
        if (s["final_val_loss_min"], s["final_val_loss_max"]) != (min(hybrid), max(hybrid)) or \
                abs(s["final_val_loss_mean"] - sum(hybrid) / 2) > 1e-12:
            fail(f"summary {s} against {hybrid}")
        kv = {n: summ[n]["kv_cache_bytes_per_token"] for n in summ}
        kv["gqa"] = info(gqa_config, sets)["kv_cache_bytes_per_token"]
        if not kv["mha"] > kv["gqa"] > kv["hybrid"]:
            fail(f"KV cache per token {kv}: MHA > GQA > hybrid expected")
        table = open(os.path.join(out, "quality.md")).read()
        if any(f"| {n} |" not in table for n in configs):
            fail(f"quality.md:\n{table}")
        has_matplotlib = subprocess.run(["/usr/bin/python3", "-c", "import matplotlib"], capture_output=True).returncode == 0
        if has_matplotlib and open(os.path.join(out, "val_loss.png"), "rb").read(8) != b"\x89PNG\r\n\x1a\n":
            fail("val_loss.png is not a PNG")
        before = sorted(os.listdir(out))
        refused = subprocess.run([*base, "--out", out, f"gqa={gqa_config}"], capture_output=True, text=True)
        if refused.returncode != 2 or "nothing is overwritten" not in refused.stderr or sorted(os.listdir(out)) != before \
                or any(".quality-" in f for f in os.listdir(root)):
            fail("a non-empty --out", refused)
        print(f"quality: 4 runs, KV bytes/token {kv}, hybrid final val_loss {hybrid}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
