#!/usr/bin/python3
"""`hydra generate` under mpirun, tensor-parallel (parallel.tp = the ranks), on the CPU: the tiny
config (every attention type, MoD and MoR; bytes vocabulary) trained for 30 steps in one
process, then continued from its checkpoint by one process and by 2 ranks at tp 2.

  check_generate_tp.py HYDRA_BIN SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]

- tp 2 draws the same tokens as one process: greedy, and seeded draws of --batch 3 (each rank
  holds its heads' caches; the logits are summed so every rank samples the whole row; an
  ulp of difference in a logit would move a seeded draw only at a near tie); from the checkpoint
  directory (greedy and drawn) and from its consolidated file (greedy); the JSON says tp 2; one
  rank prints;
- the refusals (exit 2, naming what to change): pp or dp on the ranks, a tp other than the
  ranks, and --no-cache (one process only).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HYDRA, SOURCE, MPIEXEC, FLAGS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
CONFIG = os.path.join(SOURCE, "configs", "tiny.yaml")


def fail(message, run=None):
    sys.exit(f"FAIL: {message}" + (f"\n{run.stdout}{run.stderr}" if run else ""))


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def main():
    root = tempfile.mkdtemp(prefix="hydra_generate_tp_")
    try:
        os.makedirs(os.path.join(root, "text"))
        shutil.copy("/usr/share/common-licenses/GPL-3", os.path.join(root, "text", "gpl3.txt"))
        prep = run([HYDRA, "data", "prepare", "--input", os.path.join(root, "text"), "--output",
                    os.path.join(root, "tokens"), "--tokenizer", "bytes", "--val-fraction", "0.1"])
        if prep.returncode != 0:
            fail("data prepare", prep)
        sets = [f"data.path={root}/tokens", "data.tokenizer=bytes", "model.vocab_size=256", "train.seq_len=64"]
        set_args = [w for s in sets for w in ("--set", s)]
        ckpt_dir = os.path.join(root, "ckpt")
        train = run([HYDRA, "train", "--config", CONFIG, *set_args, "--set", "train.steps=30", "--set",
                     "train.eval_every=1000", "--set", f"checkpoint.dir={ckpt_dir}", "--set", "checkpoint.every=30",
                     "--set", f"log.jsonl={root}/metrics.jsonl"])
        if train.returncode != 0:
            fail("train", train)
        ckpt = os.path.join(ckpt_dir, sorted(os.listdir(ckpt_dir))[-1])
        weights = os.path.join(root, "weights.h5")
        joined = run([HYDRA, "ckpt", "consolidate", ckpt, "--output", weights])
        if joined.returncode != 0:
            fail("ckpt consolidate", joined)

        def generate(ranks, source, *extra, tp_sets=()):
            cmd = [HYDRA, "generate", "--config", CONFIG, *set_args, *tp_sets, "--checkpoint", source,
                   "--prompt", "This License", *extra, "--json"]
            if ranks > 1:
                cmd = [MPIEXEC, *FLAGS, "-np", str(ranks), *cmd]
            return run(cmd)

        def tokens(ranks, source, *extra):
            r = generate(ranks, source, *extra, tp_sets=("--set", f"parallel.tp={ranks}") if ranks > 1 else ())
            if r.returncode != 0:
                fail(f"generate on {ranks} rank(s) {extra}", r)
            lines = [line for line in r.stdout.splitlines() if line.strip()]
            if len(lines) != 1:
                fail(f"{ranks} rank(s) printed {len(lines)} lines, not one JSON object", r)
            out = json.loads(lines[0])
            if out["tp"] != ranks:
                fail(f"JSON tp {out['tp']}, launched on {ranks} rank(s)")
            return [c["tokens"] for c in out.get("continuations", [out])]

        greedy = ("--max-new", "32", "--temperature", "0")
        drawn = ("--max-new", "48", "--temperature", "1", "--seed", "5", "--batch", "3")
        for source, extras in ((ckpt, (greedy, drawn)), (weights, (greedy,))):
            for extra in extras:
                one, tp2 = tokens(1, source, *extra), tokens(2, source, *extra)
                if one != tp2:
                    fail(f"{os.path.basename(source)} {extra}: tp 2 drew {tp2}, one process {one}")
                print(f"{os.path.basename(source)} {' '.join(extra)}: tp 2 = one process, {sum(map(len, one))} tokens")

        refusals = [
            (("--set", "parallel.pp=2", "--set", "parallel.tp=1"), "parallel.tp 2"),
            (("--set", "parallel.dp=2", "--set", "parallel.tp=1"), "dp 1 and pp 1"),
            (("--set", "parallel.tp=1"), "runs tensor-parallel"),
            (("--set", "parallel.tp=2", "--no-cache"), "--no-cache runs in one process"),
        ]
        for extra, message in refusals:
            r = generate(2, ckpt, "--max-new", "4", *extra)
            if r.returncode != 2 or message not in r.stderr:
                fail(f"{extra}: expected exit 2 naming '{message}', got {r.returncode}", r)
        print("PASS")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
