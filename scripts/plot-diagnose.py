#!/usr/bin/env python3
"""The figures of a `hydra diagnose` report, as PNG files beside its report.json (the command
runs this itself; by hand: scripts/plot-diagnose.py DIR/report.json).

  speed.png   forward+backward time and achieved TFLOP/s against tokens per call (batch x
              sequence), one line per layer type and one for the whole model
  memory.png  per layer type: weights, gradients and optimizer state (MiB), and the bytes a
              token leaves for the backward beside the KV-cache bytes a token needs

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


def main(path):
    report = json.load(open(path))
    here = os.path.dirname(os.path.abspath(path))
    if "speed" in report and any("error" not in r for r in report["speed"]):
        plot_speed(report, os.path.join(here, "speed.png"))
    if "memory" in report:
        plot_memory(report, os.path.join(here, "memory.png"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
