#!/usr/bin/env python3
"""Plots the sweep.json of `hydra sweep` as PNG files beside it (hydra sweep calls this):

  scripts/plot-sweep.py DIR/sweep.json

  throughput.png   tokens/s against ranks, one line per layout
  efficiency.png   scaling efficiency against ranks (1 = perfect), one line per layout
  time_split.png   each point's step time as stacked bars: compute, exposed communication,
                   pipeline waits (bubble and point-to-point); only where the waits were measured

Needs matplotlib (Debian: python3-matplotlib). docs/INTERFACE.md defines the figures.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display
import matplotlib.pyplot as plt  # noqa: E402


def ran(points):
    return [p for p in points if p["status"] == "ok"]


def by_layout(points):
    layouts = {}
    for p in ran(points):
        layouts.setdefault(p["layout"], []).append(p)
    return {name: sorted(rows, key=lambda p: p["ranks"]) for name, rows in layouts.items()}


def title(data, what):
    return f'{what}: {os.path.basename(data["config"])}, {data["series"]} scaling, {data["device"]} {data["dtype"]}'


def plot_lines(data, key, ylabel, name, out_dir, ideal=None):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for layout, rows in by_layout(data["points"]).items():
        rows = [p for p in rows if p.get(key) is not None]
        if rows:
            ax.plot([p["ranks"] for p in rows], [p[key] for p in rows], marker="o", label=layout)
    if ideal is not None:
        ax.axhline(ideal, color="grey", linestyle="--", linewidth=1, label="ideal")
    ax.set_xscale("log", base=2)
    ax.set_xticks(data["ranks"])
    ax.set_xticklabels([str(n) for n in data["ranks"]])
    ax.set_xlabel("ranks (processes)")
    ax.set_ylabel(ylabel)
    ax.set_title(title(data, name), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name.lower().replace(" ", "_") + ".png"), dpi=120)
    plt.close(fig)


def plot_time_split(data, out_dir):
    rows = [p for p in ran(data["points"]) if p.get("time_split_ms")]
    if not rows:
        return  # not measured (NCCL): no figure rather than a wrong one
    labels = [f'{p["layout"]}\n{p["ranks"]} rank{"s" if p["ranks"] > 1 else ""}' for p in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 2), 4.5))
    bottom = [0.0] * len(rows)
    for key, name in (("compute", "compute"), ("exposed_comm", "exposed communication (collectives)"),
                      ("pipeline_wait", "pipeline waits (bubble + point-to-point)")):
        values = [max(0.0, p["time_split_ms"][key]) for p in rows]
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("time per step (ms, mean rank)")
    ax.set_title(title(data, "Step time split"), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "time_split.png"), dpi=120)
    plt.close(fig)


def main():
    path = sys.argv[1]
    data = json.load(open(path))
    out_dir = os.path.dirname(os.path.abspath(path))
    plot_lines(data, "tok_s", "tokens/s (all ranks)", "Throughput", out_dir)
    if data.get("baseline"):
        plot_lines(data, "efficiency", "scaling efficiency (speedup / ranks)", "Efficiency", out_dir, ideal=1.0)
    plot_time_split(data, out_dir)


if __name__ == "__main__":
    main()
