#!/usr/bin/env python3
"""Plots the JSON that the GPU checks write, as PNG files next to them (docs/PERF.md links
them): what people would rather see than read.

  scripts/plot-perf.py FILE...      # bench-attention*.json, train-small*.json, checkpoint-timing*.json, step-bench*.json,
                                    # or one run's metrics file (*.jsonl: loss, learning rate,
                                    # gradient norm, throughput; docs/INTERFACE.md lists its fields)

Each FILE.json gives FILE.png (a bench-attention JSON also FILE-kernels.png: the latent
attention kernels and their variants against the floor). Needs matplotlib (Debian: python3-matplotlib; the GPU
machine's python3 has it).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402


def rows_of_jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def plot_attention(data, out):
    """Layer forward+backward time against tokens per call, per implementation."""
    rows = data["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, width in zip(axes, sorted({r["E"] for r in rows})):
        subset = sorted((r for r in rows if r["E"] == width), key=lambda r: (r["B"] * r["S"], r["S"]))
        labels = [f'B{r["B"]} S{r["S"]}' for r in subset]
        graphed = "graphed_forward_backward" in subset[0]["ccqa_fused"]
        keys = (("ccqa_fused", "CCQA fused"), ("ccqa_reference", "CCQA reference"),
                ("ccqa_heads_fused", "CCQA heads layout, fused"),
                ("ccqa_heads_reference", "CCQA heads layout, reference ops"), ("gqa_flash", "GQA + FlashAttention"))
        if graphed:  # replayed from a CUDA graph (solid, as the training step runs) and eager (dashed)
            keys = tuple(k for k in keys if "reference" not in k[0])
        for key, name in keys:
            if key not in subset[0]:
                continue
            if graphed:
                line, = ax.plot(labels, [r[key]["graphed_forward_backward"]["median_ms"] for r in subset], marker="o",
                                label=name + ", CUDA graph")
                ax.plot(labels, [r[key]["forward_backward"]["median_ms"] for r in subset], linestyle="--", marker=".",
                        color=line.get_color(), alpha=0.6, label=name + ", eager")
            else:
                ax.plot(labels, [r[key]["forward_backward"]["median_ms"] for r in subset], marker="o", label=name)
        ax.set_yscale("log")
        ax.set_ylabel("forward + backward, ms (median)")
        ax.set_title(f"E {width}")
        ax.tick_params(axis="x", rotation=45)
        ax.grid(True, which="both", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8)  # below the panels: the data fills them
    fig.suptitle(f'CCQA layer, {data.get("device", "")}, {data.get("date", "")}')
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(out, dpi=110)


def plot_latent_kernels(data, out):
    """The latent attention kernels alone: forward and backward medians of the default and of every
    variant the benchmark timed, per shape, with the floor the ceilings set."""
    rows = [r for r in data["rows"] if "latent_kernels" in r]
    if not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    for ax, pass_name in zip(axes, ("forward", "backward")):
        labels = [f'E{r["E"]} B{r["B"]}\nS{r["S"]}' for r in rows]  # two lines: four shapes fit
        series = {"default": [r["latent_kernels"][pass_name]["median_ms"] for r in rows]}
        for r_i, r in enumerate(rows):
            for key, ms in r["latent_kernels"].get("variants", {}).items():
                if key.startswith(pass_name) and key[-3:] in ("_ms", " ms") and isinstance(ms, (int, float)):
                    name = key[len(pass_name):].strip(" _").removesuffix("_ms").removesuffix(" ms").replace("_", " ")
                    series.setdefault(name, [float("nan")] * len(rows))[r_i] = ms
        width = 0.8 / len(series)
        colours = plt.cm.tab20.colors  # more variants than tab10's ten colours
        for i, (name, values) in enumerate(series.items()):
            ax.bar([x + i * width for x in range(len(rows))], values, width, label=name, color=colours[i % len(colours)])
        floors = [r["latent_kernels"][pass_name]["floor_ms"] for r in rows]
        ax.scatter([x + 0.4 - width / 2 for x in range(len(rows))], floors, marker="_", s=600, color="black",
                   label="floor (matmul, bytes, softmax at SFU+FMA peaks)", zorder=3)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], labels)
        ax.set_yscale("log")
        ax.set_ylabel("ms (median, log scale)")
        ax.set_title(f"latent attention {pass_name} kernel, {data.get('device', '')}")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def plot_training(runs, out):
    """Loss curves and throughput of the training runs of one device check, side by side."""
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
    rate_ax.set_ylabel("tokens/s (all ranks of the run, mean)")
    rate_ax.tick_params(axis="x", rotation=30)
    rate_ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def run_name(path):
    """runs/tiny/metrics.jsonl -> "tiny" (the run's folder); any other file by its own name."""
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return folder if stem == "metrics" and folder else stem


def last_row_per_step(rows):
    """A resumed run logs the steps after its checkpoint again; the later rows are the run's."""
    by_step = {}
    for r in rows:
        by_step.setdefault(r["step"], {}).update(r)
    return [by_step[s] for s in sorted(by_step)]


def spans_decades(values, ratio=20):
    positive = [v for v in values if v and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > ratio


def plot_run(rows, name, out):
    """One run's metrics file: what a user watches while training."""
    rows = last_row_per_step(rows)
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    loss_ax, lr_ax, norm_ax, rate_ax = axes.flat

    tokens = [r["tokens"] for r in rows]
    loss_ax.plot(tokens, [r["loss"] for r in rows], marker="." if len(rows) < 60 else None, label="training loss")
    val = [r for r in rows if r.get("val_loss") is not None]
    if val:
        loss_ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", color="tab:red",
                     label="validation loss")
    if spans_decades(tokens):
        loss_ax.set_xscale("log")
    loss_ax.xaxis.set_major_formatter(EngFormatter())
    loss_ax.set_xlabel("tokens seen")
    loss_ax.set_ylabel("cross-entropy loss (nats/token)")
    loss_ax.set_title("Loss")
    loss_ax.legend()

    lr_ax.plot(steps, [r["lr"] for r in rows], color="tab:green")
    lr_ax.set_xlabel("step")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title("Learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))

    norms = [r["grad_norm"] for r in rows]
    norm_ax.plot(steps, norms, color="tab:purple")
    if spans_decades(norms):
        norm_ax.set_yscale("log")
    skipped = [r for i, r in enumerate(rows) if r.get("skipped", 0) > (rows[i - 1].get("skipped", 0) if i else 0)]
    if skipped:
        norm_ax.plot([r["step"] for r in skipped], [r["grad_norm"] for r in skipped], "x", color="black",
                     markersize=8, label="step skipped (non-finite)")
        norm_ax.legend()
    norm_ax.set_xlabel("step")
    norm_ax.set_ylabel("global gradient norm (before clipping)")
    norm_ax.set_title("Gradient norm")

    plot_throughput(rate_ax, rows, steps)
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(run_title(name, rows))
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_throughput(ax, rows, steps):
    """tok/s per logging window; MFU as a second scale where the run reports it (CUDA)."""
    ax.plot(steps, [r["tok_s"] for r in rows], color="tab:orange", label="tokens/s")
    ax.yaxis.set_major_formatter(EngFormatter())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("step")
    ax.set_ylabel("tokens/s (all ranks)")
    ax.set_title("Throughput (each logging window)")
    saves = [r["step"] for r in rows if "ckpt_stall_ms" in r]
    for i, step in enumerate(saves):
        ax.axvline(step, color="gray", linestyle=":", label="checkpoint saved since the previous row" if i == 0 else None)
    # MFU is tok/s times a constant (FLOPs per token over the peak): a second scale, not a second line.
    scale = [100 * r["mfu"] / r["tok_s"] for r in rows if r.get("mfu") is not None and r["tok_s"] > 0]
    if scale:
        mfu_axis = ax.secondary_yaxis("right", functions=(lambda t: t * scale[0], lambda m: m / scale[0]))
        mfu_axis.set_ylabel("MFU, % of bf16 peak")
    if saves:
        ax.legend(loc="best")


def run_title(name, rows):
    last = rows[-1]
    parts = [f'{name}: {last["step"]} steps, {EngFormatter(places=1, sep="")(last["tokens"])} tokens',
             f'loss {last["loss"]:.3f}']
    val = [r for r in rows if r.get("val_loss") is not None]
    if val:
        parts.append(f'validation {val[-1]["val_loss"]:.3f} at step {val[-1]["step"]}')
    mem = [r["mem_gb"] for r in rows if r.get("mem_gb") is not None]
    if mem:
        parts.append(f"{max(mem):.2f} GB peak memory")
    parts.append("GPU" if any(r.get("mfu") is not None for r in rows) else "CPU")
    return ", ".join(parts)


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


def plot_step(data, out):
    """scripts/step-bench.sh: hydra's training step next to the PyTorch baseline's modes, per
    batch size: throughput (left) and memory (right)."""
    batches = sorted({r["batch"] for r in data["hydra"]} | {r["batch"] for r in data["torch"] if "tok_s" in r})
    series = [("hydra", {r["batch"]: r for r in data["hydra"]})]
    for mode in ("eager", "compile", "reduce-overhead"):
        rows = {r["batch"]: r for r in data["torch"] if r.get("mode") == mode and "tok_s" in r}
        if rows:
            series.append((f"PyTorch {mode}", rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(series)
    for i, (name, rows) in enumerate(series):
        xs = [j + i * width for j, b in enumerate(batches) if b in rows]
        left.bar(xs, [rows[b]["tok_s"] for b in batches if b in rows], width, label=name)
        right.bar(xs, [rows[b].get("peak_gb", 0) for b in batches if b in rows], width, label=name)
        predicted = [(x, rows[b]["predicted_peak_gb"]) for x, b in zip(xs, [b for b in batches if b in rows])
                     if rows[b].get("predicted_peak_gb")]
        if predicted:
            right.scatter([x for x, _ in predicted], [y for _, y in predicted], marker="_", s=300, color="black",
                          zorder=3, label="hydra info's prediction")
    for ax in (left, right):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))])
        ax.set_xticklabels([f"batch {b}" for b in batches])
        ax.grid(True, axis="y", alpha=0.3)
    left.yaxis.set_major_formatter(EngFormatter())
    left.set_ylabel("tokens/s (higher is better)")
    left.set_title("throughput", fontsize=10)
    right.set_ylabel("GB (lower is better)")
    right.set_title("peak memory allocated (caching allocator)", fontsize=10)
    left.legend(fontsize=8, loc="upper left")
    right.legend(fontsize=8, loc="upper left")
    seq = data["hydra"][0]["seq_len"] if data["hydra"] else ""
    fig.suptitle(f'{data.get("config", "")}: the training step, bf16, sequence {seq}; {data.get("device", "")}, '
                 f'{data.get("date", "")}', fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(paths):
    for path in paths:
        out = os.path.splitext(path)[0] + ".png"
        if path.endswith(".jsonl"):
            plot_run(rows_of_jsonl(path), run_name(path), out)
        else:
            data = json.load(open(path))
            if "rows" in data and "ceilings" in data:
                plot_attention(data, out)
                kernels_out = os.path.splitext(path)[0] + "-kernels.png"
                if plot_latent_kernels(data, kernels_out):
                    print(kernels_out)
            elif "sync_save_ms" in data:
                plot_checkpoint(data, out)
            elif "hydra" in data and "torch" in data:
                plot_step(data, out)
            else:  # train-small.json: {run: [rows]}
                plot_training(data, out)
        print(out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
