#!/usr/bin/python3
"""`hydra sweep` on the CPU: the tiny config (bytes vocabulary, 32-token sequences) through mpirun.

  check_sweep.py HYDRA_BIN SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]

- strong series, layouts dp, pp2 and tp2pp2 at 1, 2 and 4 ranks: pp2 at 1 rank and tp2pp2 below 4
  skipped with their reasons;
  every figure recomputed here from the points' own bench step JSON (tokens per step = global
  batch x seq_len, tok/s from the step time, efficiency from the raw tok/s, the time split from
  the ranks' waits, the waits' mean and max from each rank's); every loss within the documented
  tolerance of the 1-rank loss; the PNGs (when matplotlib is there).
- weak series, dp at 1, 2 and 4 ranks through an mpirun that refuses 4 ranks: the global batch
  grows with dp, the failed point is recorded with its exit code and output, the sweep goes on
  and exits 4.
- refusals (exit 2, the value named, nothing written): bad --ranks, --series, --layouts,
  --launcher pbs, --sbatch-args without the slurm launcher, a missing --mpirun, a non-empty --out, and hydra sweep under mpirun.
"""
import json
import os
import subprocess
import sys
import tempfile

HYDRA, SOURCE, MPIEXEC, FLAGS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
CONFIG = os.path.join(SOURCE, "configs", "tiny.yaml")
SEQ = 32


def fail(message, run=None):
    sys.exit(f"FAIL: {message}" + (f"\n{run.stdout}{run.stderr}" if run else ""))


def close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def sweep(root, out, series, ranks, layouts, mpirun=MPIEXEC, extra=()):
    sets = [f"data.path={root}/tokens", "data.tokenizer=bytes", "model.vocab_size=256", f"train.seq_len={SEQ}"]
    cmd = [HYDRA, "sweep", "--config", CONFIG, *[w for s in sets for w in ("--set", s)], "--series", series,
           "--ranks", ranks, "--layouts", layouts, "--mpirun", mpirun, "--mpirun-args", " ".join(FLAGS),
           "--steps", "2", "--warmup", "1", "--out", out, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=200)


def check_waits(bench, name):
    """host_wait_ms: the mean and max over the ranks of each rank's own figure."""
    for kind in ("collective", "recv", "send"):
        values = [r[f"{kind}_wait_ms"] for r in bench["ranks"]]
        got = bench["host_wait_ms"][kind]
        if not close(got["max"], max(values)) or not close(got["mean"], sum(values) / len(values)):
            fail(f"{name}: host_wait_ms.{kind} {got} against the ranks' {values}")


def check_point(p, bench, base_tok_s, out):
    name = p["name"]
    if bench["world"] != p["ranks"] or bench["layout"] != {"dp": p["dp"], "tp": p["tp"], "pp": p["pp"]}:
        fail(f"{name}: bench ran {bench['world']} ranks as {bench['layout']}")
    if p["tokens_per_step"] != p["global_batch"] * SEQ or bench["global_batch"] != p["global_batch"]:
        fail(f"{name}: tokens_per_step {p['tokens_per_step']} for global batch {p['global_batch']} x {SEQ}")
    tok_s = p["tokens_per_step"] / (bench["step_ms"] / 1e3)
    if not close(p["tok_s"], tok_s, 1e-6) or not close(p["tok_s"], bench["tok_s"]):
        fail(f"{name}: tok_s {p['tok_s']}, expected {tok_s} from the step time")
    if not close(p["tok_s_per_rank"], p["tok_s"] / p["ranks"]) or p["step_ms"] != bench["step_ms"]:
        fail(f"{name}: tok_s_per_rank {p['tok_s_per_rank']} or step_ms {p['step_ms']}")
    if not close(p["speedup"], p["tok_s"] / base_tok_s) or not close(p["efficiency"], p["tok_s"] / base_tok_s / p["ranks"]):
        fail(f"{name}: speedup {p['speedup']} / efficiency {p['efficiency']} against the 1-rank {base_tok_s} tok/s")
    check_waits(bench, name)
    split = p["time_split_ms"]
    waits = {k: bench["host_wait_ms"][k]["mean"] for k in ("collective", "recv", "send")}
    if not close(split["exposed_comm"], waits["collective"]) or not close(split["pipeline_wait"], waits["recv"] + waits["send"]):
        fail(f"{name}: time split {split} against the mean waits {waits}")
    if not close(split["compute"] + split["exposed_comm"] + split["pipeline_wait"], p["step_ms"], 1e-9) or split["compute"] <= 0:
        fail(f"{name}: time split {split} does not add up to step {p['step_ms']} ms")
    if (p["pp"] > 1) != (split["pipeline_wait"] > 0):
        fail(f"{name}: pipeline waits {split['pipeline_wait']} ms with pp {p['pp']}")
    if (p["ranks"] > 1) != (split["exposed_comm"] > 0):
        fail(f"{name}: exposed communication {split['exposed_comm']} ms on {p['ranks']} ranks")
    mem = p["memory_per_rank"]
    if [m["rank"] for m in mem] != list(range(p["ranks"])) or p["device_used_gb_max"] != max(m["device_used_gb"] for m in mem):
        fail(f"{name}: memory per rank {mem}")
    if not os.path.isfile(os.path.join(out, p["log"])):
        fail(f"{name}: no log {p['log']}")


def check_strong(root):
    out = os.path.join(root, "strong")
    run = sweep(root, out, "strong", "1,2,4", "dp,pp2,tp2pp2")
    if run.returncode != 0:
        fail(f"strong sweep exit {run.returncode}", run)
    report = json.load(open(os.path.join(out, "sweep.json")))
    names = [p["name"] for p in report["points"]]
    if names != ["dp-1", "dp-2", "dp-4", "pp2-1", "pp2-2", "pp2-4", "tp2pp2-1", "tp2pp2-2", "tp2pp2-4"]:
        fail(f"points {names}")
    combined = report["points"][8]
    if [report["points"][i]["status"] for i in (6, 7)] != ["skipped"] * 2 or \
            "tp2pp2 needs a multiple of 4 ranks" not in report["points"][7]["skip_reason"] or \
            (combined["dp"], combined["tp"], combined["pp"], combined["status"]) != (1, 2, 2, "ok"):
        fail(f"tp2pp2: {report['points'][6:]}")
    skipped = report["points"][3]
    if skipped["status"] != "skipped" or "pp2 needs a multiple of 2 ranks" not in skipped["skip_reason"] or "tok_s" in skipped or skipped["command"]:
        fail(f"pp2 at 1 rank: {skipped}")
    if "[4/9] pp2 at 1 rank: skipped" not in run.stdout or "[9/9] tp2pp2 at 4 ranks" not in run.stdout or "left)" not in run.stdout:
        fail("no progress line per point", run)
    ran = [p for p in report["points"] if p["status"] == "ok"]
    benches = {p["name"]: json.load(open(os.path.join(out, p["bench_json"]))) for p in ran}
    base = benches["dp-1"]
    if report["baseline"] != {"point": "dp-1", "tok_s": base["tok_s"], "last_loss": base["last_loss"]}:
        fail(f"baseline {report['baseline']}")
    tolerance = report["loss_tolerance"]
    if tolerance != 1e-4:
        fail(f"fp32 loss tolerance {tolerance}, documented 1e-4")
    for p in ran:
        check_point(p, benches[p["name"]], base["tok_s"], out)
        if p["global_batch"] != 8:
            fail(f"{p['name']}: strong series global batch {p['global_batch']}, expected the config's 8")
        diff = benches[p["name"]]["last_loss"] - base["last_loss"]
        rel = abs(diff) / abs(base["last_loss"])
        if p["loss_diff"] != diff or not close(p["loss_rel_diff"], rel) or p["loss_agrees"] != (rel <= tolerance):
            fail(f"{p['name']}: loss_diff {p['loss_diff']} / {p['loss_rel_diff']} / {p['loss_agrees']}, expected {diff}")
        if not p["loss_agrees"]:
            fail(f"{p['name']}: last loss {p['last_loss']} differs from the 1-rank {base['last_loss']} by {rel:.2e}")
    if report["all_ran"] is not True or report["losses_agree"] is not True:
        fail(f"all_ran {report['all_ran']}, losses_agree {report['losses_agree']}")
    has_matplotlib = subprocess.run(["/usr/bin/python3", "-c", "import matplotlib"], capture_output=True).returncode == 0
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    if has_matplotlib and (pngs != ["efficiency.png", "throughput.png", "time_split.png"] or report["plots"] != pngs):
        fail(f"plots {pngs}, sweep.json lists {report['plots']}")
    for png in pngs:
        if open(os.path.join(out, png), "rb").read(8) != b"\x89PNG\r\n\x1a\n":
            fail(f"{png} is not a PNG")
    if not has_matplotlib and not report["plots_skipped"]:
        fail("no matplotlib, and sweep.json does not say why there are no plots")


def check_weak_with_a_failure(root):
    fake = os.path.join(root, "mpirun-refusing-4")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\nprev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = -np ] && [ \"$a\" = 4 ]; then\n"
                "    echo 'refusing 4 ranks on purpose'; exit 7\n  fi\n  prev=$a\ndone\n"
                f"exec '{MPIEXEC}' \"$@\"\n")
    os.chmod(fake, 0o755)
    out = os.path.join(root, "weak")
    run = sweep(root, out, "weak", "1,2,4", "dp", mpirun=fake)
    if run.returncode != 4 or "[3/3] dp at 4 ranks: FAILED with exit 7" not in run.stdout:
        fail(f"weak sweep with a failing point: exit {run.returncode}, expected 4", run)
    report = json.load(open(os.path.join(out, "sweep.json")))
    one, two, four = report["points"]
    benches = {p["name"]: json.load(open(os.path.join(out, p["bench_json"]))) for p in (one, two)}
    for p in (one, two):
        if p["global_batch"] != 8 * p["dp"]:
            fail(f"{p['name']}: weak series global batch {p['global_batch']}, expected 8 x dp {p['dp']}")
        check_point(p, benches[p["name"]], benches["dp-1"]["tok_s"], out)
        if p["loss_diff"] is not None or p["loss_agrees"] is not None:
            fail(f"{p['name']}: the weak series compares no losses")
    if four["status"] != "failed" or four["exit_code"] != 7 or "refusing 4 ranks on purpose" not in four["output_tail"]:
        fail(f"the failed point: {four}")
    if report["all_ran"] is not False or report["loss_tolerance"] is not None:
        fail(f"all_ran {report['all_ran']}, loss_tolerance {report['loss_tolerance']}")


def check_refusals(root):
    taken = os.path.join(root, "taken")
    os.makedirs(taken)
    open(os.path.join(taken, "mine.txt"), "w").write("the user's\n")
    fresh = os.path.join(root, "fresh")
    cases = [(["--ranks", "1,x"], fresh, "'x'"), (["--ranks", "0"], fresh, "'0'"), (["--ranks", "2,2"], fresh, "'2'"),
             (["--series", "medium"], fresh, "'medium'"), (["--layouts", "dp,tp1"], fresh, "'tp1'"),
             (["--layouts", "zp2"], fresh, "'zp2'"), (["--layouts", "tp2pp1"], fresh, "'tp2pp1'"),
             (["--layouts", "pp2tp2"], fresh, "'pp2tp2'"), (["--launcher", "pbs"], fresh, "'pbs'"), (["--sbatch-args", "--partition=x"], fresh, "needs --launcher slurm"),
             (["--mpirun", "/nonexistent/mpirun"], fresh, "/nonexistent/mpirun"), ([], taken, "overwrites nothing")]
    for args, out, words in cases:
        full = {"--series": "strong", "--ranks": "1,2", "--layouts": "dp"}
        full.update(dict(zip(args[::2], args[1::2])))
        cmd = [HYDRA, "sweep", "--config", CONFIG, "--out", out, "--mpirun", full.pop("--mpirun", MPIEXEC),
               *[w for kv in full.items() for w in kv]]
        bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if bad.returncode != 2 or words not in bad.stderr:
            fail(f"{args}: exit {bad.returncode}, expected 2 naming {words}", bad)
        if os.path.exists(fresh) or os.listdir(taken) != ["mine.txt"] or any(".sweep-" in f for f in os.listdir(root)):
            fail(f"{args}: the refusal wrote something")
    under = subprocess.run([MPIEXEC, *FLAGS, "-np", "2", HYDRA, "sweep", "--config", CONFIG, "--series", "strong",
                            "--ranks", "1", "--out", fresh], capture_output=True, text=True, timeout=60)
    if under.returncode != 2 or "runs in one process" not in under.stderr or os.path.exists(fresh):
        fail(f"under mpirun -np 2: exit {under.returncode}, expected 2", under)


def main():
    root = tempfile.mkdtemp(prefix="hydra_sweep_")
    os.makedirs(os.path.join(root, "text"))
    with open("/usr/share/common-licenses/GPL-3") as src, open(os.path.join(root, "text", "gpl3.txt"), "w") as dst:
        dst.write(src.read())
    prep = subprocess.run([HYDRA, "data", "prepare", "--input", os.path.join(root, "text"), "--output",
                           os.path.join(root, "tokens"), "--tokenizer", "bytes", "--val-fraction", "0.1"],
                          capture_output=True, text=True, timeout=60)
    if prep.returncode != 0:
        fail("data prepare", prep)
    check_refusals(root)
    check_strong(root)
    check_weak_with_a_failure(root)
    print("sweep: every point, figure, skip, failure and refusal as documented")


if __name__ == "__main__":
    main()
