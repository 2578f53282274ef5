#!/usr/bin/env python3
"""Trains several models on the same corpus for the same number of tokens and compares them
(issue 19's quality comparison; docs/QUALITY.md records the results):

  scripts/quality-compare.py --hydra build/hydra --data TOKENS_DIR --out DIR [--steps N]
      [--seeds 1,2] [--eval-every K] [--set key=value]... NAME=CONFIG [NAME=CONFIG...]

Every run is `hydra train --config CONFIG` with data.path, train.steps, train.seed,
train.eval_every and its own checkpoint.dir and log.jsonl under DIR/NAME-sSEED/, plus the
--set keys given here (for all runs alike: e.g. train.device=cuda). A progress line per run
(runs done, elapsed, about how long is left). Writes, through a temporary and a rename:
  DIR/quality.json  per run: name, config, seed, params, KV-cache bytes per token (hydra info),
                    tokens trained, the validation curve [[step, val_loss]...], the final
                    val_loss, mean tok/s; per name: the mean final val_loss and its min/max
                    over seeds;
  DIR/quality.md    the same as a Markdown table, for docs/QUALITY.md;
  DIR/val_loss.png  the validation curves, one colour per name, a line per seed (needs
                    matplotlib; without it quality.json says plots_skipped).
Exit 0; 4 when a run failed (its log's tail is printed; the other runs still run). DIR must
be new or empty: nothing a user wrote is overwritten.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hydra", required=True)
    p.add_argument("--data", required=True, help="a prepared corpus (hydra data prepare --output)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seeds", default="1")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--set", action="append", default=[], dest="sets")
    p.add_argument("runs", nargs="+", metavar="NAME=CONFIG")
    a = p.parse_args()
    try:
        a.seed_list = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds: '{a.seeds}' is not a list of whole numbers")
    if a.steps < 1 or a.eval_every < 1:
        p.error("--steps and --eval-every must be at least 1")
    a.named = []
    for item in a.runs:
        name, sep, config = item.partition("=")
        if not sep or not name or not os.path.isfile(config):
            p.error(f"'{item}' is not NAME=CONFIG with an existing config file")
        a.named.append((name, config))
    if len({n for n, _ in a.named}) != len(a.named):
        p.error("a NAME appears twice")
    if os.path.exists(a.out) and (not os.path.isdir(a.out) or os.listdir(a.out)):
        p.error(f"--out {a.out} exists and is not an empty directory (nothing is overwritten)")
    return a


def info(hydra, config, sets):
    cmd = [hydra, "info", "--config", config, *[w for s in sets for w in ("--set", s)], "--json"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return out["model"]


def train(a, name, config, seed, run_dir):
    sets = a.sets + [f"data.path={a.data}", f"train.steps={a.steps}", f"train.seed={seed}",
                     f"train.eval_every={a.eval_every}", f"checkpoint.dir={run_dir}/ckpt",
                     f"log.jsonl={run_dir}/metrics.jsonl"]
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "train.log"), "w") as log:
        code = subprocess.run([a.hydra, "train", "--config", config, *[w for s in sets for w in ("--set", s)]],
                              stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = open(os.path.join(run_dir, "train.log")).read()[-2000:]
        print(f"quality: {name} seed {seed} FAILED with exit {code}:\n{tail}", flush=True)
        return None
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if line.strip()]
    curve = [[r["step"], r["val_loss"]] for r in rows if "val_loss" in r]
    rates = [r["tok_s"] for r in rows if "tok_s" in r][1:]  # the first row includes the warm-up
    model = info(a.hydra, config, a.sets)
    return {"name": name, "config": config, "seed": seed, "params": model["params_total"],
            "kv_cache_bytes_per_token": model["kv_cache_bytes_per_token"],
            "tokens": rows[-1]["tokens"] if rows and "tokens" in rows[-1] else None, "val_curve": curve,
            "final_val_loss": curve[-1][1] if curve else None,
            "tok_s": sum(rates) / len(rates) if rates else None, "dir": os.path.basename(run_dir)}


def summary(runs):
    out = {}
    for name in dict.fromkeys(r["name"] for r in runs):
        losses = [r["final_val_loss"] for r in runs if r["name"] == name and r["final_val_loss"] is not None]
        first = next(r for r in runs if r["name"] == name)
        out[name] = {"seeds": len(losses), "params": first["params"],
                     "kv_cache_bytes_per_token": first["kv_cache_bytes_per_token"],
                     "final_val_loss_mean": sum(losses) / len(losses) if losses else None,
                     "final_val_loss_min": min(losses, default=None), "final_val_loss_max": max(losses, default=None)}
    return out


def markdown(summ, runs):
    lines = ["| model | parameters | KV cache, bytes/token | final val loss (mean; min-max over seeds) | tok/s |",
             "|---|---|---|---|---|"]
    for name, s in summ.items():
        rates = [r["tok_s"] for r in runs if r["name"] == name and r["tok_s"]]
        spread = "" if s["seeds"] < 2 else f" ({s['final_val_loss_min']:.4f}-{s['final_val_loss_max']:.4f})"
        loss = "failed" if s["final_val_loss_mean"] is None else f"{s['final_val_loss_mean']:.4f}{spread}"
        rate = f"{sum(rates) / len(rates):,.0f}" if rates else "-"
        lines.append(f"| {name} | {s['params']:,} | {s['kv_cache_bytes_per_token']:,} | {loss} | {rate} |")
    return "\n".join(lines) + "\n"


def plot(runs, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = {}
    for r in runs:
        if not r["val_curve"]:
            continue
        colour = colours.setdefault(r["name"], f"C{len(colours)}")
        label = r["name"] if sum(1 for x in runs if x["name"] == r["name"] and x["seed"] < r["seed"]) == 0 else None
        ax.plot([s for s, _ in r["val_curve"]], [v for _, v in r["val_curve"]], color=colour, marker=".",
                linewidth=1, label=label)
    ax.set_xlabel("step (every model sees the same tokens)")
    ax.set_ylabel("validation loss")
    ax.set_title("validation loss at equal tokens (one line per seed)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    a = parse_args()
    tmp = f"{a.out.rstrip('/')}.quality-{os.getpid()}.tmp"
    os.makedirs(tmp)
    jobs = [(name, config, seed) for name, config in a.named for seed in a.seed_list]
    runs, failed, start = [], 0, time.time()
    for i, (name, config, seed) in enumerate(jobs):
        r = train(a, name, config, seed, os.path.join(tmp, f"{name}-s{seed}"))
        if r is None:
            failed += 1
        else:
            runs.append(r)
        elapsed = time.time() - start
        left = elapsed / (i + 1) * (len(jobs) - i - 1)
        final = "failed" if r is None else f"final val_loss {r['final_val_loss']:.4f}"
        print(f"quality: [{i + 1}/{len(jobs)}] {name} seed {seed}: {final} (elapsed {elapsed:.0f} s, about "
              f"{left:.0f} s left)", flush=True)
    summ = summary(runs)
    plotted = plot(runs, os.path.join(tmp, "val_loss.png"))
    report = {"steps": a.steps, "seeds": a.seed_list, "eval_every": a.eval_every, "data": a.data, "sets": a.sets,
              "runs": runs, "summary": summ, "all_ran": failed == 0,
              "plots": ["val_loss.png"] if plotted else [], "plots_skipped": None if plotted else "no matplotlib"}
    with open(os.path.join(tmp, "quality.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(tmp, "quality.md"), "w") as f:
        f.write(markdown(summ, runs))
    if os.path.isdir(a.out):
        os.rmdir(a.out)  # empty, checked at the start
    os.rename(tmp, a.out)
    print(markdown(summ, runs), end="")
    return 0 if failed == 0 else 4


if __name__ == "__main__":
    sys.exit(main())
