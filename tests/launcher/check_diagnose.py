#!/usr/bin/python3
"""`hydra diagnose` end to end on the CPU (the tiny config, a small grid):

  check_diagnose.py HYDRA_BIN SOURCE_DIR

- the report directory holds report.json, report.md and, where matplotlib is installed, one PNG
  per figure; the run prints a progress line per measured point;
- every grid point of every layer type and of the model has positive times;
- the parameters of one layer of each type equal the counts worked out by hand from
  docs/MODEL.md below, their bytes follow from them, and so do the KV-cache bytes per token;
- the gradients section (2 steps on the built-in sample) covers every parameter of the model
  once (their sizes add up to the parameter count), with finite norms, min <= mean <= max,
  per-element norms that are the norms over sqrt(size), and flags from its own thresholds;
- learning, components and compression: every run that is the configured model (learning's
  first, components' "as configured", compression's configured C) has exactly the gradient
  section's losses (the same run); final losses, improvements, thresholds and steps to threshold
  follow from the curves; MoD routers used their capacity (0.75); every recommendation names a
  documented rule, and the component rule fires exactly where the numbers say it must;
- a second run into the same --out is refused (exit 2) and changes nothing; unknown sections,
  bad grids (exit 2) and missing data (exit 3) are refused before anything is measured or
  written; no staging directory is left behind.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

SECTIONS = ["speed", "memory", "gradients", "learning", "components", "compression"]
RULES = {"gradient-non-finite", "gradient-exploding", "gradient-vanishing", "component-change-helps",
         "component-buys-little", "compression-choice", "layer-type-learns-faster", "router-decided"}

HYDRA, SOURCE = sys.argv[1], sys.argv[2]
CONFIG = os.path.join(SOURCE, "configs", "tiny.yaml")

# tiny: E 64, H 4 (d 16), H_kv 2, C 4 (d_h 4, Lq 16, Lk 8), K 3, F = round_up(2.0 x 64, 64) = 128,
# d_c = 32, d_r = 8. Each layer: attention + its norms, two pre-norms (2E = 128), the MLP (3 E F = 24576).
LAYER_REST = 128 + 3 * 64 * 128
EXPECTED_PARAMS = {
    # E H d + 2 E d + H d E, norms 2d + H d
    "mqa": 64 * 64 + 2 * 64 * 16 + 64 * 64 + (2 * 16 + 64) + LAYER_REST,
    # E Lq + 2 E Lk + Lq E + H_kv, convs (Lq+Lk)(K+1) + (Lq+Lk)(d_h K+1), norms 2 d_h + Lq
    "ccqa": 64 * 16 + 2 * 64 * 8 + 16 * 64 + 2 + 24 * 4 + 24 * 13 + (2 * 4 + 16) + LAYER_REST,
    # 2 E d_c + d_c H d + d_c H d_r + 2 d_c H d + E d_r + H d E, norms 2 d_c + H d
    "mla": 2 * 64 * 32 + 32 * 64 + 32 * 4 * 8 + 2 * 32 * 64 + 64 * 8 + 64 * 64 + (2 * 32 + 64) + LAYER_REST,
}
EXPECTED_KV = {"mqa": 2 * 2 * 16, "ccqa": 2 * 2 * 8, "mla": 2 * (32 + 8)}  # bf16 bytes a token


def hydra(*args):
    return subprocess.run([HYDRA, *args], capture_output=True, text=True)


def fail(message, run=None):
    sys.exit(f"FAIL: {message}" + (f"\n{run.stdout}{run.stderr}" if run else ""))


def has_matplotlib():
    return subprocess.run(["/usr/bin/python3", "-c", "import matplotlib"], capture_output=True).returncode == 0


def check_curves(report, md):
    loss = report["gradients"]["loss"]
    for key, configured in (("learning", "model"), ("components", "as configured"), ("compression", "C 4")):
        section = report[key]
        runs = section["runs"]
        if runs[0]["name"] != configured or runs[0]["loss"] != loss:
            fail(f"{key}: the first run {runs[0]['name']} does not repeat the gradient section's run exactly")
        finals = []
        for r in runs:
            if "error" in r:
                continue
            tail = r["loss"][-3:]
            if abs(r["final_loss"] - sum(tail) / len(tail)) > 1e-9 or abs(r["improvement"] - (r["loss"][0] - r["final_loss"])) > 1e-9:
                fail(f"{key} {r['name']}: final loss / improvement do not follow from the curve")
            if not r["ms_per_step"] > 0 or not r["params"] > 0 or len(r["loss"]) != 2:
                fail(f"{key} {r['name']}: {r}")
            finals.append(r["final_loss"])
        if abs(section["threshold"] - max(finals)) > 1e-12:
            fail(f"{key}: threshold {section['threshold']} is not the worst final loss {max(finals)}")
        for r in runs:
            if "error" in r:
                continue
            means = [sum(r["loss"][max(0, i - 2): i + 1]) / len(r["loss"][max(0, i - 2): i + 1]) for i in range(len(r["loss"]))]
            want = next((i + 1 for i, m in enumerate(means) if m <= section["threshold"]), -1)
            if r["steps_to_threshold"] != want:
                fail(f"{key} {r['name']}: steps_to_threshold {r['steps_to_threshold']}, the curve says {want}")
        heading = {"learning": "## Learning", "components": "## Components", "compression": "## Compression"}[key]
        if heading not in md:
            fail(f"report.md lacks {heading}")
    names = [r["name"] for r in report["learning"]["runs"]]
    if names != ["model", "mqa stack", "ccqa stack", "mla stack"]:
        fail(f"learning runs {names}")
    for r in report["learning"]["runs"][1:]:
        if "model.pattern=[" not in r["change"] or "mod.enabled=false" not in r["change"]:
            fail(f"learning {r['name']}: change {r['change']}")
    if not all("ccqa_layer_ms" in r for r in report["compression"]["runs"] if "error" not in r):
        fail("compression: a run without its CCQA layer time")
    # C 2, 4, 8 in tiny's layout (head_dim), then C 4 in the other layout: trained (tiny's 4 heads
    # over C 4 make 1 query head, a valid model), and a different model (its own parameter count).
    runs = {r["name"]: r for r in report["compression"]["runs"]}
    if sorted(runs) != ["C 2", "C 4", "C 4, compress heads", "C 8"]:
        fail(f"compression runs {sorted(runs)}")
    layout = runs["C 4, compress heads"]
    if "error" in layout or layout["change"] != "model.ccqa.compress=heads" or layout["params"] == runs["C 4"]["params"]:
        fail(f"compression: the heads layout's run {layout}")
    routers = report["learning"]["routers"]
    if not any(u["name"].endswith(".router") for u in routers) or not any(".mor_routers." in u["name"] for u in routers):
        fail(f"learning: the MoD and MoR routers of tiny are not all there: {[u['name'] for u in routers]}")
    for u in routers:
        if not (0 < u["selected"] <= u["candidates"]) or not (0 <= u["entropy"] <= 0.6932):
            fail(f"router {u}")
        if u["name"].endswith(".router") and abs(u["capacity_used"] - 0.75) > 0.02:
            fail(f"MoD router {u['name']} used {u['capacity_used']} of its tokens, capacity 0.75")
    advice = report["recommendations"]
    for a in advice:
        if a["rule"] not in RULES or not a["text"]:
            fail(f"recommendation {a}")
    # On the CPU the three runs of the configured model are bitwise the same: no noise, the least margin.
    noise = report["loss_noise"]
    if noise["configured_runs"] != 3 or noise["spread"] != 0 or noise["margin"] != 0.02:
        fail(f"loss noise {noise}")
    base = report["components"]["runs"][0]
    for r in report["components"]["runs"][1:]:
        fired = any(a["rule"] == "component-change-helps" and a["text"].startswith(r["name"] + ":") for a in advice)
        if "error" not in r and fired != (base["final_loss"] - r["final_loss"] > noise["margin"]):
            fail(f"component-change-helps for {r['name']}: fired {fired}, final {r['final_loss']} vs {base['final_loss']}")
    if "## Recommendations" not in md:
        fail("report.md lacks its recommendations")


def main():
    root = tempfile.mkdtemp(prefix="hydra_diagnose_")
    try:
        out = os.path.join(root, "report")
        # data.path empty: the gradients section trains on its built-in sample (no corpus needed).
        # Short runs of 2 sequences of 32 tokens: 16 of them (gradients, learning, components, compression).
        grid = ["--batches", "1,2", "--seqs", "16,32", "--repeats", "1", "--steps", "2", "--set", "data.path=",
                "--set", "train.global_batch=2", "--set", "train.seq_len=32"]
        run = hydra("diagnose", "--config", CONFIG, "--out", out, *grid)
        if run.returncode != 0:
            fail(f"exit {run.returncode}", run)
        if "[1/16]" not in run.stdout or "[16/16]" not in run.stdout or "left)" not in run.stdout:
            fail("no progress line per point ([i/16] ... left)", run)
        names = sorted(os.listdir(out))
        want = ["report.json", "report.md"] + ([s + ".png" for s in SECTIONS] if has_matplotlib() else [])
        if sorted(set(names) & set(want)) != sorted(want):
            fail(f"report directory holds {names}, expected {want}")
        report = json.load(open(os.path.join(out, "report.json")))
        md = open(os.path.join(out, "report.md")).read()
        if report["sections"] != SECTIONS or report["device"] != "cpu":
            fail(f"sections {report['sections']}, device {report['device']}")
        points = {(r["what"], r["batch"], r["seq"]): r for r in report["speed"]}
        for what in ("mqa", "ccqa", "mla", "model"):
            for b in (1, 2):
                for s in (16, 32):
                    r = points.get((what, b, s))
                    if r is None or not r["forward_ms"] > 0 or not r["forward_backward_ms"] > 0:
                        fail(f"speed point {what} B {b} S {s}: {r}")
        if len(report["speed"]) != 16:
            fail(f"{len(report['speed'])} speed points, expected 16")
        # The model points' predicted peak is hydra info's estimate at that batch and sequence,
        # less the optimizer state: asked of `hydra info --json` itself.
        for b in (1, 2):
            for s in (16, 32):
                info = hydra("info", "--config", CONFIG, "--json", "--set", f"train.global_batch={b}",
                             "--set", f"train.micro_batch={b}", "--set", f"train.seq_len={s}")
                if info.returncode != 0:
                    fail("hydra info", info)
                stage = json.loads(info.stdout)["memory"]["stages"][0]
                want = (stage["weights"] + stage["activations"] + stage["buffers"]) / 1e9
                got = points[("model", b, s)].get("predicted_gb")
                if got is None or abs(got - want) > 1e-12 or "peak_gb" in points[("model", b, s)]:
                    fail(f"model B {b} S {s}: predicted_gb {got}, hydra info says {want}")
                if "predicted_gb" in points[("mqa", b, s)]:
                    fail("a layer point has predicted_gb")
        dtype_bytes = 4  # tiny trains in fp32
        for m in report["memory"]["layers"]:
            t = m["type"]
            if m["params"] != EXPECTED_PARAMS[t]:
                fail(f"{t}: {m['params']} parameters, counted by hand {EXPECTED_PARAMS[t]}")
            if m["weight_bytes"] != dtype_bytes * m["params"] or m["optimizer_bytes"] != 13 * m["params"]:
                fail(f"{t}: bytes {m}")
            if m["kv_bytes_per_token"] != EXPECTED_KV[t] or not m["activation_bytes_per_token"] > 0:
                fail(f"{t}: per token {m}")
            if f"| {t} | {m['params']} |" not in md:
                fail(f"report.md has no memory row for {t}")
        if "## Speed" not in md or "## Memory" not in md:
            fail("report.md lacks a section")
        g = report["gradients"]
        if g["steps"] != 2 or len(g["loss"]) != 2 or "GPL-3" not in g["data"]:
            fail(f"gradients: steps {g['steps']}, loss {g['loss']}, data {g['data']}")
        if sum(p["numel"] for p in g["params"]) != report["params_total"]:
            fail("gradients: the parameters do not add up to params_total")
        if len({p["name"] for p in g["params"]}) != len(g["params"]):
            fail("gradients: a parameter listed twice")
        median = g["median_rms"]
        for p in g["params"]:
            if not (0 <= p["min"] <= p["mean"] <= p["max"]) or p["max"] != p["max"]:
                fail(f"gradients: {p}")
            if abs(p["mean_rms"] - p["mean"] / p["numel"] ** 0.5) > 1e-12 * max(1.0, p["mean"]):
                fail(f"gradients: per-element norm of {p['name']}")
            want_flag = ("exploding" if p["mean_rms"] > g["exploding_factor"] * median else
                         "vanishing" if p["max"] / p["numel"] ** 0.5 < g["vanishing_factor"] * median else "")
            if p["flag"] != want_flag:
                fail(f"gradients: {p['name']} flagged '{p['flag']}', its numbers say '{want_flag}'")
        if "## Gradient flow" not in md or "embed.weight" not in md:
            fail("report.md lacks the gradient flow section")
        check_curves(report, md)
        stage = report["memory"]["run_estimate"]["stages"][0]
        if stage["peak"] != sum(stage[k] for k in ("weights", "gradients", "optimizer", "activations", "buffers")):
            fail(f"run estimate {stage}")

        # Refusals: nothing overwritten, nothing left behind.
        before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
        again = hydra("diagnose", "--config", CONFIG, "--out", out, *grid)
        if again.returncode != 2 or "--out" not in again.stderr:
            fail("a second run into the same --out was not refused with exit 2", again)
        if {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)} != before:
            fail("the refused run changed the earlier report")
        # Usage errors exit 2; missing data is bad input (3), found before anything is measured.
        for args, word, code in ((["--sections", "speed,bogus"], "bogus", 2), (["--batches", "1,0"], "--batches", 2),
                                 (["--sections", "components", "--set", "model.pattern=[mqa,mqa,mla,mla,mqa,mla,mqa,mla]"], "components", 2),
                                 (["--seqs", "16,x"], "--seqs", 2), (["--repeats", "0"], "--repeats", 2),
                                 (["--steps", "0"], "--steps", 2),
                                 (["--set", "data.path=/nonexistent/tokens"], "/nonexistent/tokens", 3)):
            bad = hydra("diagnose", "--config", CONFIG, "--out", os.path.join(root, "bad"), *args)
            if bad.returncode != code or word not in bad.stderr or "[1/" in bad.stdout:
                fail(f"{args}: expected exit {code} naming {word} before any measurement", bad)
            if os.path.exists(os.path.join(root, "bad")):
                fail(f"{args}: the refused run made its --out")
        left = glob.glob(os.path.join(root, ".*.tmp"))
        if left:
            fail(f"staging directories left behind: {left}")
        print("PASS")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
