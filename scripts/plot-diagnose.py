#!/usr/bin/env python3
"""The figures of a `hydra diagnose` report, as PNG files beside its report.json (the command
runs this itself; by hand: scripts/plot-diagnose.py DIR/report.json).

  speed.png   forward+backward time and achieved TFLOP/s against tokens per call (batch x
              sequence), one line per layer type and one for the whole model
  memory.png  per layer type: weights, gradients and optimizer state (MiB), and the bytes a
              token leaves for the backward beside the KV-cache bytes a token needs
  gradients.png  the loss of the short run, and each component's mean gradient norm per element
              in each layer (the layers in model order), the flags' thresholds as dashed lines
  learning.png  the loss curves of the configured model and of each single-type stack
  components.png, compression.png  each run's loss curve, and its final loss against its step time

Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_speed(report, out):
    rows = [r for r in report["speed"] if "error" not in r]
    fig, (time_ax, rate_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for what in dict.fromkeys(r["what"] for r in rows):
        mine = sorted((r for r in rows if r["what"] == what), key=lambda r: (r["batch"] * r["seq"], r["seq"]))
        tokens = [r["batch"] * r["seq"] for r in mine]
        time_ax.plot(tokens, [r["forward_backward_ms"] for r in mine], marker="o", label=what)
        rate_ax.plot(tokens, [r["forward_backward_tflops"] for r in mine], marker="o", label=what)
    time_ax.set_ylabel("forward + backward, ms (median)")
    rate_ax.set_ylabel("forward + backward, TFLOP/s achieved")
    for ax in (time_ax, rate_ax):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens per call (batch x sequence)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    time_ax.set_yscale("log")
    fig.suptitle(f'hydra diagnose: speed, {report["device"]} {report["dtype"]}, {report["date"]}')
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_memory(report, out):
    layers = report["memory"]["layers"]
    types = [m["type"] for m in layers]
    mib = 1.0 / (1 << 20)
    fig, (state_ax, token_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    bottom = [0.0] * len(types)
    for key, name in (("weight_bytes", "weights"), ("gradient_bytes", "gradients"), ("optimizer_bytes", "optimizer")):
        values = [m[key] * mib for m in layers]
        state_ax.bar(types, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    state_ax.set_ylabel("MiB per layer")
    state_ax.set_title("persistent state of one layer")
    state_ax.legend()
    x = range(len(types))
    token_ax.bar([i - 0.2 for i in x], [m["activation_bytes_per_token"] for m in layers], width=0.4,
                 label="activations kept for backward")
    token_ax.bar([i + 0.2 for i in x], [m["kv_bytes_per_token"] for m in layers], width=0.4, label="KV cache (bf16)")
    token_ax.set_xticks(list(x))
    token_ax.set_xticklabels(types)
    token_ax.set_ylabel("bytes per token, one layer")
    token_ax.set_title("per token")
    token_ax.legend()
    for ax in (state_ax, token_ax):
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f'hydra diagnose: memory, {report["dtype"]}')
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_gradients(report, out):
    g = report["gradients"]
    fig, (loss_ax, norm_ax) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 2]})
    loss_ax.plot(range(1, len(g["loss"]) + 1), g["loss"], marker=".")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("LM loss")
    loss_ax.set_title(f'{g["steps"]} steps')
    loss_ax.grid(True, alpha=0.3)
    # One line per (type, component): the parameter's mean norm in each layer that has it.
    layered = [p for p in g["params"] if p["type"] != "model"]
    layers = list(dict.fromkeys(p["name"][: -len(p["component"]) - 1] for p in layered))
    for key in dict.fromkeys((p["type"], p["component"]) for p in layered):
        points = [(layers.index(p["name"][: -len(p["component"]) - 1]), p["mean_rms"]) for p in layered
                  if (p["type"], p["component"]) == key]
        norm_ax.plot([x for x, _ in points], [y for _, y in points], marker=".", linewidth=0.8,
                     label=f"{key[0]} {key[1]}")
    median = g["median_rms"]
    norm_ax.axhline(median * g["exploding_factor"], linestyle="--", color="red", label="exploding above")
    norm_ax.axhline(median * g["vanishing_factor"], linestyle="--", color="gray", label="vanishing below")
    norm_ax.set_yscale("log")
    norm_ax.set_xlabel("layer (model order)")
    norm_ax.set_ylabel("gradient norm per element, mean over steps")
    norm_ax.grid(True, which="both", alpha=0.3)
    norm_ax.legend(fontsize=6, ncol=3, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f'hydra diagnose: gradient flow, {report["device"]} {report["dtype"]}')
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_curves(report, key, title, out):
    section = report[key]
    runs = [r for r in section["runs"] if "error" not in r]
    fig, (loss_ax, trade_ax) = plt.subplots(1, 2, figsize=(12, 4.4))
    for r in runs:
        loss_ax.plot(range(1, len(r["loss"]) + 1), r["loss"], linewidth=1.0, label=r["name"])
        trade_ax.scatter([r["ms_per_step"]], [r["final_loss"]], label=r["name"])
        trade_ax.annotate(r["name"], (r["ms_per_step"], r["final_loss"]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
    loss_ax.axhline(section["threshold"], linestyle="--", color="gray", label="threshold (worst final)")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("LM loss")
    loss_ax.set_title("loss of each run (same seed, same tokens)")
    loss_ax.legend(fontsize=7)
    trade_ax.set_xlabel("ms per training step (median)")
    trade_ax.set_ylabel(f'final loss (mean of the last {section["final_steps"]} steps)')
    trade_ax.set_title("what each run costs and reaches")
    for ax in (loss_ax, trade_ax):
        ax.grid(True, alpha=0.3)
    fig.suptitle(f'hydra diagnose: {title}, {report["device"]} {report["dtype"]}')
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(path):
    report = json.load(open(path))
    here = os.path.dirname(os.path.abspath(path))
    if "speed" in report and any("error" not in r for r in report["speed"]):
        plot_speed(report, os.path.join(here, "speed.png"))
    if "memory" in report:
        plot_memory(report, os.path.join(here, "memory.png"))
    if "gradients" in report:
        plot_gradients(report, os.path.join(here, "gradients.png"))
    for key, title in (("learning", "learning"), ("components", "CCQA components"), ("compression", "CCQA compression")):
        if key in report and any("error" not in r for r in report[key]["runs"]):
            plot_curves(report, key, title, os.path.join(here, f"{key}.png"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
