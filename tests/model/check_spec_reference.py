#!/usr/bin/python3
"""Independent implementations of the model against hydra, through the real binary.

  check_spec_reference.py HYDRA_BIN SOURCE_DIR spec|spec-heads|torch|torch-heads

spec:  tests/model/spec_reference.py (NumPy, float64, written from docs/MODEL.md alone) on a
       model with all three attention types, MoD and MoR (3 recursions), untied embeddings.
spec-heads: the same with 8 heads and CCQA's `compress: heads` layout (2 query heads and
       ceil(2 / 4) = 1 key/value head of the full head size 8), the post-mix norm off
       (the norm itself is the same code in both layouts; `spec` keeps it on), and a gqa
       (8 query heads on 2 key/value heads) and an mha layer in place of two MQA layers.
torch: bench/torch_baseline.py (the PyTorch baseline of the speed benchmarks, float64) on the
       dense model it times (MoD off, one recursion), read from `hydra ckpt consolidate`; its
       pattern has a gqa and an mha layer too.
torch-heads: the same with 8 heads and CCQA's `heads` layout (the speed benchmarks' baseline of
       that layout), the post-mix norm on.

Both train a few fp32 steps on a small byte-level corpus with a global batch of exactly
every training window, so the step's loss is the mean over all windows whatever the shuffle,
and with a learning rate large enough that convolutions, temperatures and norms have moved
from their initial values. The loss hydra logs for step 3 was computed with the weights of
the step-2 checkpoint; the validation loss of step 3 with those of step 3. Exit 0 when both
agree within 2e-5 (fp32 against float64) — except the training loss of the routed model:
top-k routing picks the k highest router scores, and scores closer than fp32's resolution
(gaps of 1e-7 occur in this corpus) can rank differently in fp32 and float64, moving a
token in or out of a layer; that loss gets 1e-2. The validation loss (threshold routing,
no ranking) is the tight check of MoD and MoR.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HYDRA, SOURCE, WHICH = sys.argv[1], sys.argv[2], sys.argv[3]
TOLERANCE = 2e-5
TOPK_TOLERANCE = 1e-2  # the spec model's training loss (see above)
SEQ_LEN = 64

# Every key spelled out (the NumPy model reads them all); the two tests differ in size and routing.
COMMON = """  dim: 64
  heads: {heads}
  kv_heads: 2
  pattern: {pattern}
  vocab_size: 256
  tie_embeddings: false
  ccqa: {{compression: 4, compress: {compress}, conv_kernel: 3, use_convs: true, qk_mean: true, qk_mean_gain: 0.25,
         value_shift: true, post_mix_norm: {post_mix_norm}}}
  mla: {{latent_ratio: 0.5}}
"""
ROUTED = """  mlp_ratio: 2.7
  macro_blocks: 2
  mod: {enabled: true, capacity: 0.75, layers: [1, 3, 5, 7], aux_weight: 0.01}
  mor: {recursions: 3, aux_weight: 0.01}
"""
SPEC = WHICH.startswith("spec")
# spec-heads, torch and torch-heads put the grouped-query kinds gqa (H_kv 2) and mha in place of
# two MQA layers.
GROUPED = "[mqa, gqa, ccqa, ccqa, ccqa, mla, mha, mla]"
HEADS = WHICH.endswith("-heads")
MODEL = "model:\n" + COMMON.format(heads=8 if HEADS else 4,
                                   pattern=GROUPED if WHICH != "spec" else "[mqa, mqa, ccqa, ccqa, ccqa, mla, mqa, mla]",
                                   compress="heads" if HEADS else "head_dim",
                                   post_mix_norm="false" if WHICH == "spec-heads" else "true") + {
    "spec": ROUTED,
    "spec-heads": ROUTED,
    "torch": """  mlp_ratio: 2.0
  macro_blocks: 1
  mod: {enabled: false}
  mor: {recursions: 1}
""",
}["torch" if WHICH == "torch-heads" else WHICH]


def run(args, **kw):
    out = subprocess.run(args, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} exited {out.returncode}:\n{out.stdout}{out.stderr}")
    return out.stdout


def main():
    root = tempfile.mkdtemp(prefix=f"hydra_spec_{WHICH}_")
    try:
        text = os.path.join(root, "text")
        os.makedirs(text)
        with open("/usr/share/common-licenses/GPL-3") as f:  # one split chunk: half train, half val
            open(os.path.join(text, "gpl.txt"), "w").write(f.read()[:6000])
        tokens = os.path.join(root, "tokens")
        run([HYDRA, "data", "prepare", "--input", text, "--output", tokens, "--tokenizer", "bytes",
             "--val-fraction", "0.5"])
        manifest = json.load(open(os.path.join(tokens, "manifest.json")))
        assert len(manifest["train"]) == 1, "one train shard expected"
        train_tokens = manifest["train"][0]["tokens"]
        windows = (train_tokens - 1) // SEQ_LEN
        config = os.path.join(root, "run.yaml")
        open(config, "w").write(MODEL + f"""train:
  steps: 3
  global_batch: {windows}
  micro_batch: {windows}
  seq_len: {SEQ_LEN}
  lr: 1.0e-2
  min_lr: 1.0e-2
  warmup_steps: 0
  eval_every: 0
  eval_batches: 1
  seed: 7
data:
  path: {tokens}
  tokenizer: bytes
checkpoint:
  dir: {root}/ckpt
  every: 1
  keep: 3
log:
  every: 1
  jsonl: {root}/metrics.jsonl
""")
        run([HYDRA, "train", "--config", config])
        rows = [json.loads(l) for l in open(os.path.join(root, "metrics.jsonl")) if l.strip()]
        step3 = [r for r in rows if r["step"] == 3][-1]
        hydra = {"train": step3["loss"], "val": step3["val_loss"]}
        ckpt = {"train": f"{root}/ckpt/step_00000002", "val": f"{root}/ckpt/step_00000003"}
        ref = {}
        for split in ("train", "val"):
            if SPEC:
                count = windows if split == "train" else windows_of_eval(config)
                out = run(["/usr/bin/python3", os.path.join(SOURCE, "tests/model/spec_reference.py"), config,
                           ckpt[split], split, str(count)])
                ref[split] = json.loads(out)["lm_loss"]
            else:
                ref[split] = torch_loss(config, ckpt[split], split, windows, root)
        failed = []
        for split in ("train", "val"):
            diff = abs(hydra[split] - ref[split])
            limit = TOPK_TOLERANCE if SPEC and split == "train" else TOLERANCE
            print(f"{WHICH} {split}: hydra {hydra[split]:.10f} reference {ref[split]:.10f} |diff| {diff:.2e} "
                  f"(limit {limit:g})")
            if not diff <= limit:
                failed.append(split)
        if failed:
            sys.exit(f"FAIL: the {WHICH} reference differs from hydra ({', '.join(failed)} loss)")
        print("PASS")
    finally:
        if not os.environ.get("HYDRA_KEEP"): shutil.rmtree(root, ignore_errors=True)


def windows_of_eval(config):
    """Validation (docs/DATA.md): the first eval_batches x global_batch windows of the val split
    (this test's split holds at least one global batch)."""
    import yaml

    t = yaml.safe_load(open(config))["train"]
    return t["eval_batches"] * t["global_batch"]


def torch_loss(config, ckpt, split, train_windows, root):
    consolidated = os.path.join(root, os.path.basename(ckpt) + ".h5")
    run([HYDRA, "ckpt", "consolidate", ckpt, "--output", consolidated])
    sys.path.insert(0, os.path.join(SOURCE, "bench"))
    sys.path.insert(0, os.path.join(SOURCE, "tests/model"))
    import torch
    import torch_baseline as tb
    from spec_reference import windows as read_windows
    import yaml

    model = tb.HydraDense(tb.model_config(config)).double()
    missing = tb.load_hydra_h5(model, consolidated)
    assert not missing, f"not in {consolidated}: {missing}"
    count = train_windows if split == "train" else windows_of_eval(config)
    win = torch.from_numpy(read_windows(yaml.safe_load(open(config))["data"]["path"], split, SEQ_LEN, count))
    with torch.no_grad():
        return model(win[:, :-1], win[:, 1:]).item()


if __name__ == "__main__":
    main()
