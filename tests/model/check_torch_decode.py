#!/usr/bin/python3
"""bench/torch_decode.py, the PyTorch baseline of `hydra generate`'s speed, decodes the model
hydra decodes (CPU, float64):

1. its static-cache decoding gives the full forward's logits at every position, for a pattern of
   every attention type (MQA, GQA, CCQA with its convolution and value-shift state, MLA, MHA),
   its parameters perturbed away from the init (whose identity convolutions and unit norms would
   hide a state bug);
2. from a checkpoint that hydra wrote (tiny, dense, bytes vocabulary) and consolidated, its
   greedy continuation of a prompt is `hydra generate --temperature 0`'s (a smoke test of loading
   a hydra checkpoint: so briefly trained, the model repeats one byte after any prompt).
Its forward is hydra's (model_matches_torch_reference, a trained checkpoint); 1 makes its
decoding that forward.

  check_torch_decode.py HYDRA_BIN SOURCE_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HYDRA, SOURCE = sys.argv[1], sys.argv[2]
CONFIG = os.path.join(SOURCE, "configs", "tiny.yaml")
BASELINE = os.path.join(SOURCE, "bench", "torch_decode.py")
DENSE = ["mod.enabled=false", "mor.recursions=1"]


def fail(message, run=None):
    sys.exit(f"FAIL: {message}" + (f"\n{run.stdout}{run.stderr}" if run else ""))


def run(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        fail(what, r)
    return r


def baseline(*args):
    sets = [w for s in DENSE for w in ("--set", s)]
    return run(["/usr/bin/python3", BASELINE, "--config", CONFIG, *sets, *args], f"torch_decode.py {args}")


def main():
    every_kind = baseline("--set", "pattern=[mqa, gqa, ccqa, mla, mha, ccqa]", "--set", "macro_blocks=1", "--check",
                          "--prompt-len", "7", "--new", "9")
    print(every_kind.stdout.strip())

    root = tempfile.mkdtemp(prefix="hydra_torch_decode_")
    try:
        os.makedirs(os.path.join(root, "text"))
        shutil.copy("/usr/share/common-licenses/GPL-3", os.path.join(root, "text", "gpl3.txt"))
        run([HYDRA, "data", "prepare", "--input", os.path.join(root, "text"), "--output", os.path.join(root, "tokens"),
             "--tokenizer", "bytes", "--val-fraction", "0.1"], "data prepare")
        sets = [f"data.path={root}/tokens", "data.tokenizer=bytes", "model.vocab_size=256", "train.seq_len=64",
                *("model." + s for s in DENSE)]
        set_args = [w for s in sets for w in ("--set", s)]
        ckpt_dir = os.path.join(root, "ckpt")
        run([HYDRA, "train", "--config", CONFIG, *set_args, "--set", "train.steps=20", "--set", "train.eval_every=1000",
             "--set", f"checkpoint.dir={ckpt_dir}", "--set", "checkpoint.every=20", "--set",
             f"log.jsonl={root}/metrics.jsonl"], "train")
        ckpt = os.path.join(ckpt_dir, sorted(os.listdir(ckpt_dir))[-1])
        weights = os.path.join(root, "weights.h5")
        run([HYDRA, "ckpt", "consolidate", ckpt, "--output", weights], "consolidate")
        # A smoke test of the checkpoint path (a model this briefly trained repeats one byte after any
        # prompt); the equivalence itself is 1 with the forward test named above.
        prompt = "GNU General Public Lic"
        hydra = json.loads(run([HYDRA, "generate", "--config", CONFIG, *set_args, "--checkpoint", weights,
                                "--prompt", prompt, "--max-new", "8", "--temperature", "0", "--json"],
                               "generate").stdout)["tokens"]
        ids = ",".join(str(b) for b in prompt.encode())
        torch = json.loads(baseline("--set", "vocab_size=256", "--checkpoint", weights, "--prompt-ids", ids,
                                    "--new", "8").stdout)["tokens"]
        print(f"{prompt!r}: hydra {bytes(hydra)!r}, PyTorch {bytes(torch)!r}")
        if hydra != torch:
            fail(f"the baseline's greedy tokens {torch} are not hydra generate's {hydra}")
        print("PASS")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
