#!/usr/bin/python3
"""The projection of docs/SCALING.md: `hydra plan`'s best layout for the 1b and 4b configs on 8 to
1024 GPUs of a cluster file, strong (global batch fixed) and weak (8 sequences per GPU) scaling.

  plan-projection.py HYDRA_BIN CLUSTER_YAML OUT_DIR

Writes OUT_DIR/projection.md (the tables) and OUT_DIR/projection.png (tok/s per GPU and MFU
against GPUs; needs matplotlib). Runs: train.device=cuda, bf16, dense (MoD off, MoR 1),
1024-token sequences; strong: global batch 1024 sequences (1M tokens); weak: 8 x GPUs sequences.
1b is calibrated by its two H200 bench step runs in docs/perf (the H200 has the H100's tensor
cores); 4b, never measured, at the cluster's peak x 0.40.
"""
import json
import os
import subprocess
import sys

HYDRA, CLUSTER, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPUS = [8, 16, 32, 64, 128, 256, 512, 1024]
SEQ, STRONG_BATCH, WEAK_PER_GPU = 1024, 1024, 8
# head_dim: the CCQA layout of the 2026-12-04 projection (docs/SCALING.md) and of 1b's calibration
# runs, made before `heads` became the default; a `heads` projection needs calibration runs of
# that model (bench/plan_validate_gpu.py), since hydra plan refuses another model's.
DENSE = ["model.mod.enabled=false", "model.mor.recursions=1", "model.ccqa.compress=head_dim"]
CALIBRATION = {"1b": ",".join(os.path.join(ROOT, "docs", "perf", f"plan-calibration-1b-dense-h200-2026-12-04-b{b}.json")
                              for b in (4, 8))}


def best(config, gpus, batch):
    path = os.path.join(OUT, f"plan-{config}-{gpus}-{batch}.json")
    sets = ["train.device=cuda", "train.dtype=bf16", f"train.seq_len={SEQ}", f"train.global_batch={batch}"] + DENSE
    cmd = [HYDRA, "plan", "--config", os.path.join(ROOT, "configs", f"{config}.yaml"),
           *[w for s in sets for w in ("--set", s)], "--cluster", CLUSTER, "--gpus", str(gpus), "--top", "1",
           "--json", path]
    if config in CALIBRATION:
        cmd += ["--calibration", CALIBRATION[config]]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    layouts = json.load(open(path))["layouts"]
    os.remove(path)
    return layouts[0] if layouts and layouts[0]["feasible"] else None


def main():
    os.makedirs(OUT, exist_ok=True)
    lines, series = [], {}
    for config in ("1b", "4b"):
        for mode in ("strong", "weak"):
            lines += [f"\n{config}, {mode} scaling "
                      f"({'global batch %d' % STRONG_BATCH if mode == 'strong' else '%d sequences per GPU' % WEAK_PER_GPU}"
                      f" x {SEQ} tokens)\n",
                      "| GPUs | best layout | mem GB | step ms (compute / comm / bubble) | tok/s | tok/s per GPU | MFU | efficiency |",
                      "|---|---|---|---|---|---|---|---|"]
            base = None
            points = []
            for g in GPUS:
                p = best(config, g, STRONG_BATCH if mode == "strong" else WEAK_PER_GPU * g)
                if p is None:
                    lines.append(f"| {g} | none feasible | | | | | | |")
                    continue
                per_gpu = p["tok_s"] / g
                base = base or (per_gpu, g)
                eff = per_gpu / base[0]
                ms = p["ms"]
                comm = ms["tp_comm"] + ms["pp_comm"] + ms["dp_exposed"]
                lines.append(f"| {g} | {p['layout']} | {p['memory_bytes']['peak'] / 1e9:.1f} | {ms['step']:.0f} "
                             f"({ms['compute']:.0f} / {comm:.0f} / {ms['bubble']:.0f}) | {p['tok_s']:.3g} | "
                             f"{per_gpu:.0f} | {p['mfu']:.1%} | {eff:.1%} |")
                points.append((g, per_gpu, p["mfu"]))
            series[f"{config} {mode}"] = points
    open(os.path.join(OUT, "projection.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, pts in series.items():
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        axes[1].plot([p[0] for p in pts], [p[2] * 100 for p in pts], marker="o", label=name)
    for ax, label in zip(axes, ("predicted tok/s per GPU", "predicted MFU (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("GPUs")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"hydra plan projection on {os.path.basename(CLUSTER)}")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "projection.png"), dpi=100)


if __name__ == "__main__":
    main()
