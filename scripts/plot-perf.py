#!/usr/bin/env python3
"""Plots the JSON that the GPU checks write, as PNG files next to them (docs/PERF.md links
them): what people would rather see than read.

  scripts/plot-perf.py FILE...      # bench-attention*.json, train-small*.json(l), checkpoint-timing*.json,
                                    # or a run's metrics.jsonl (loss curve)

Each FILE.json gives FILE.png. Needs matplotlib (Debian: python3-matplotlib; the GPU
machine's python3 has it).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display
import matplotlib.pyplot as plt  # noqa: E402


def rows_of_jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def plot_attention(data, out):
    """Layer forward+backward time against tokens per call, per implementation."""
    rows = data["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, width in zip(axes, sorted({r["E"] for r in rows})):
        subset = sorted((r for r in rows if r["E"] == width), key=lambda r: (r["B"] * r["S"], r["S"]))
        labels = [f'B{r["B"]} S{r["S"]}' for r in subset]
        for key, name in (("ccqa_fused", "CCQA fused"), ("ccqa_reference", "CCQA reference"),
                          ("gqa_flash", "GQA + FlashAttention")):
            if key not in subset[0]:
                continue
            ax.plot(labels, [r[key]["forward_backward"]["median_ms"] for r in subset], marker="o", label=name)
        ax.set_yscale("log")
        ax.set_ylabel("forward + backward, ms (median)")
        ax.set_title(f"E {width}")
        ax.tick_params(axis="x", rotation=45)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f'CCQA layer, {data.get("device", "")}, {data.get("date", "")}')
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_training(runs, out):
    """Loss curves and throughput of the training runs of one device check."""
    fig, (loss_ax, rate_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = sorted(runs)
    for name in names:
        rows = runs[name]
        line, = loss_ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".", label=name)
        val = [r for r in rows if "val_loss" in r]
        if val:
            loss_ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "x", markersize=9,
                         color=line.get_color(), label=name + " validation")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.grid(True, alpha=0.3)
    loss_ax.legend()
    # Throughput: the mean over logged rows after the first (which includes warm-up).
    rates = []
    for name in names:
        rows = [r for r in runs[name] if "tok_s" in r][1:] or runs[name]
        rates.append(sum(r["tok_s"] for r in rows) / max(1, len(rows)))
    bars = rate_ax.bar(names, rates)
    for bar, name in zip(bars, names):
        mem = [r["mem_gb"] for r in runs[name] if "mem_gb" in r]
        if mem:
            rate_ax.annotate(f"{max(mem):.1f} GB", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                             ha="center", va="bottom", fontsize=8)
    rate_ax.set_ylabel("tokens/s (all GPUs of the run)")
    rate_ax.tick_params(axis="x", rotation=30)
    rate_ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_checkpoint(data, out):
    """Stall of the training loop: synchronous save against checkpoint.async, and the load."""
    series = [("sync save", data.get("sync_save_ms", [])), ("async: loop stall", data.get("async_stall_ms", [])),
              ("async: host copy", data.get("async_host_copy_ms", [])),
              ("async: background write", data.get("async_background_write_ms", [])),
              ("load", data.get("load_ms", []))]
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [n for n, v in series if v]
    ax.bar(names, [min(v) / 1e3 for n, v in series if v], label="min")
    ax.set_ylabel("seconds")
    size = data.get("checkpoint_bytes")
    ax.set_title(f'{data.get("config", "")}: {size / 1e9:.2f} GB per checkpoint' if size else data.get("config", ""))
    ax.tick_params(axis="x", rotation=15)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(paths):
    for path in paths:
        out = os.path.splitext(path)[0] + ".png"
        if path.endswith(".jsonl"):
            plot_training({os.path.basename(os.path.splitext(path)[0]): rows_of_jsonl(path)}, out)
        else:
            data = json.load(open(path))
            if "rows" in data and "ceilings" in data:
                plot_attention(data, out)
            elif "sync_save_ms" in data:
                plot_checkpoint(data, out)
            else:  # train-small.json: {run: [rows]}
                plot_training(data, out)
        print(out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
