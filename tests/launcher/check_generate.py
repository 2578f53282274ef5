#!/usr/bin/python3
"""`hydra generate` on the CPU: the tiny config (every attention type, MoD and MoR; bytes
vocabulary) trained for a few steps on the GPL text, then continued from its checkpoint.

  check_generate.py HYDRA_BIN SOURCE_DIR

- greedy decoding (--temperature 0) is consistent with itself: continuing the prompt plus the
  first half of a greedy continuation gives the second half (positions, the context and MoD's
  causal routing all enter); the JSON's text is the bytes of its tokens;
- the streamed text (no --json) is the JSON's text; a seed repeats its draws exactly;
- the refusals: no prompt or two, bad numbers (exit 2), a missing checkpoint or one of another
  model shape (exit 3).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HYDRA, SOURCE = sys.argv[1], sys.argv[2]
CONFIG = os.path.join(SOURCE, "configs", "tiny.yaml")


def fail(message, run=None):
    sys.exit(f"FAIL: {message}" + (f"\n{run.stdout}{run.stderr}" if run else ""))


def hydra(*args):
    return subprocess.run([HYDRA, *args], capture_output=True, timeout=120)


def main():
    root = tempfile.mkdtemp(prefix="hydra_generate_")
    try:
        os.makedirs(os.path.join(root, "text"))
        shutil.copy("/usr/share/common-licenses/GPL-3", os.path.join(root, "text", "gpl3.txt"))
        prep = hydra("data", "prepare", "--input", os.path.join(root, "text"), "--output", os.path.join(root, "tokens"),
                     "--tokenizer", "bytes", "--val-fraction", "0.1")
        if prep.returncode != 0:
            fail("data prepare", prep)
        sets = [f"data.path={root}/tokens", "data.tokenizer=bytes", "model.vocab_size=256", "train.seq_len=64"]
        set_args = [w for s in sets for w in ("--set", s)]
        ckpt_dir = os.path.join(root, "ckpt")
        train = hydra("train", "--config", CONFIG, *set_args, "--set", "train.steps=30", "--set", "train.eval_every=1000",
                      "--set", f"checkpoint.dir={ckpt_dir}", "--set", "checkpoint.every=30",
                      "--set", f"log.jsonl={root}/metrics.jsonl")
        if train.returncode != 0:
            fail("train", train)
        ckpt = os.path.join(ckpt_dir, sorted(os.listdir(ckpt_dir))[-1])
        base = ["generate", "--config", CONFIG, *set_args, "--checkpoint", ckpt]

        def generate(*extra):
            run = hydra(*base, *extra, "--json")
            if run.returncode != 0:
                fail(f"generate {extra}", run)
            out = json.loads(run.stdout)
            if out["step"] != 30 or out["stopped"] not in ("max_new", "end_of_text"):
                fail(f"header {out}")
            if max(out["tokens"], default=0) < 128 and out["text"] != "".join(map(chr, out["tokens"])):
                fail(f"text {out['text']!r} is not the bytes of its tokens {out['tokens']}")
            return out

        prompt = "This License"
        whole = generate("--prompt", prompt, "--max-new", "12", "--temperature", "0")
        if len(whole["tokens"]) != 12 or max(whole["tokens"]) >= 128:
            fail(f"greedy continuation {whole}")
        half = generate("--prompt", prompt + whole["text"][:6], "--max-new", "6", "--temperature", "0")
        if half["tokens"] != whole["tokens"][6:]:
            fail(f"greedy is not consistent: {whole['tokens']} then {half['tokens']} from the first half")
        a = generate("--prompt", prompt, "--max-new", "10", "--seed", "5", "--top-k", "20", "--top-p", "0.9")
        b = generate("--prompt", prompt, "--max-new", "10", "--seed", "5", "--top-k", "20", "--top-p", "0.9")
        if a["tokens"] != b["tokens"] or a["sampling"] != {"temperature": 1.0, "top_k": 20, "top_p": 0.9, "seed": 5}:
            fail(f"seed 5 twice: {a} / {b}")
        stream = hydra(*base, "--prompt", prompt, "--max-new", "12", "--temperature", "0")
        if stream.returncode != 0 or stream.stdout.decode("latin-1") != whole["text"] + "\n":
            fail(f"streamed text {stream.stdout!r}, JSON text {whole['text']!r}", stream)

        prompt_file = os.path.join(root, "prompt.txt")
        with open(prompt_file, "w") as f:
            f.write(prompt)
        cases = [([], 2, "one of --prompt"), (["--prompt", "x", "--prompt-file", prompt_file], 2, "one of --prompt"),
                 (["--prompt", "x", "--top-p", "0"], 2, "--top-p"), (["--prompt", "x", "--temperature", "-1"], 2,
                                                                    "--temperature"),
                 (["--prompt", "x", "--max-new", "0"], 2, "--max-new")]
        for extra, code, words in cases:
            run = hydra(*base, *extra)
            if run.returncode != code or words.encode() not in run.stderr:
                fail(f"{extra}: exit {run.returncode}, expected {code} naming {words}", run)
        missing = hydra("generate", "--config", CONFIG, *set_args, "--checkpoint", os.path.join(root, "none"),
                        "--prompt", "x")
        other = hydra(*base, "--set", "model.dim=128", "--prompt", "x")
        for run, what in ((missing, "a missing checkpoint"), (other, "another model's checkpoint")):
            if run.returncode != 3:
                fail(f"{what}: exit {run.returncode}, expected 3", run)
        print("generate: greedy consistent, streamed = JSON text, seeded draws repeat, refusals as documented")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
