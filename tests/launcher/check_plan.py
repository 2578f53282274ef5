#!/usr/bin/python3
"""`hydra plan` against measurement on the CPU: the tiny config (bytes vocabulary, 64-token
sequences, global batch 8), one thread per rank (OMP_NUM_THREADS=1, so a rank is a core).

  check_plan.py [--strict] HYDRA_BIN SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]

1. calibrate (each run the fastest of two; again once if every miss below is a prediction slower
   than its measurement): 1-rank `hydra bench step --json` runs at batches 2 and 8 (the achieved FLOP rate,
   the per-micro-batch overhead and the optimizer's time per parameter), one at batch 8 with
   `--tp-slice 2` (the work tp does not divide) and a 2-rank `hydra bench comm --json` (the links);
2. predict with `hydra plan --cluster configs/clusters/cpu-2core.yaml --gpus 1|2 --calibration
   --comm --json`;
3. measure `hydra bench step` for 1 rank, dp2, tp2 and pp2 (4 micro-batches) and compare the
   step time (the fastest of 2 runs with --strict, of 1 in CI, more while it misses; fail past the time tolerance) and the memory:
   hydra plan's peak must equal bench step's predicted_peak_gb (the same estimate); the measured
   peak is a CUDA figure, absent on the CPU; and dp2's data-parallel traffic (bench step's
   calls_per_step.dp.bytes) must be the float32 gradient of `hydra info`'s parameter count, and
   the tp-slice run must make the same tensor-parallel calls (count and bytes) as a rank of tp2.
Prints the table of errors (docs/SCALING.md quotes it).
"""
import json
import os
import subprocess
import sys
import resource
import tempfile
import time

STRICT = sys.argv[1:2] == ["--strict"]
ARGS = sys.argv[2:] if STRICT else sys.argv[1:]
if len(ARGS) < 3:
    sys.exit("usage: check_plan.py [--strict] HYDRA_BIN SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]")
HYDRA, SOURCE, MPIEXEC, FLAGS = ARGS[0], ARGS[1], ARGS[2], ARGS[3:]
CONFIG = os.path.join(SOURCE, "configs", "tiny.yaml")
CLUSTER = os.path.join(SOURCE, "configs", "clusters", "cpu-2core.yaml")
MEM_TOL = 0.10
ENV = dict(os.environ, OMP_NUM_THREADS="1")
# Time tolerance. --strict: the 15% at every layout (20% for the multi-rank layouts until
# 2026-12-07, when 16 of 20 runs on a quiet machine passed at 15%, one missed at tp2 -17.5% and
# three could not be judged; docs/SCALING.md has the measured errors). Without it (ctest, CI) a layout fails past 50%: the machine itself
# moves a step by more than 20% from one minute to the next (the same quiet 2-core machine
# measured 1 rank at 181-261 ms and dp2 at 151-212 ms on 2026-12-03/04 with nothing else running,
# and the CI machine's pp2 came out 24% faster than predicted), so 20% in CI failed on timing
# noise (stop 32), which a unit test must not do. 50% still catches the end-to-end slips only this
# test can see (a calibration file read wrongly, a unit, a layout measured as another: 2x and
# more); the formulas themselves, bubble and optimizer included, are tested exactly by
# tests/launcher/test_plan_model.cpp, and `scripts/plan-accuracy.sh` judges the 15%.
# Two ranks fill both cores of the CI machine, so any other process running at the same time
# slows a multi-rank step by up to 2x (it takes a core from one rank, the other waits for it): a
# disturbed measurement, not a wrong prediction. Each run therefore counts the CPU time other
# processes took during it (the machine's busy time in /proc/stat less this script's
# children's); a run where they averaged more than DISTURBED cores beyond those its ranks leave
# free (1 for 1 rank) does not count. A layout outside its tolerance is measured again, up to
# ATTEMPTS runs, judged by its fastest undisturbed run. When no run of a layout was
# undisturbed, its time is printed, not judged, and the test ends as skipped (SKIP, ctest's
# SKIP_RETURN_CODE) once everything else has passed.
# The machine's two cores are virtual, and at times one of them runs 1.5x slower than the other
# for minutes (2026-12-04, 19:31 UTC: the 1-rank step pinned to core 0 took 107 ms, to core 1
# 162-169 ms; ten minutes later both 108 ms): a 2-rank step then goes at the slow core's pace,
# and a 1-rank run at whichever core it lands on. So each run also times a fixed loop on every
# core before and after it, and a run during which the cores differed by more than UNEQUAL does
# not count either (the plan assumes identical devices, as a cluster's GPUs are).
UNEQUAL = 0.10
TIME_TOL = 0.15 if STRICT else 0.50  # the same for every layout
ATTEMPTS = 4
# Runs of each layout at least (the fastest counts): two for --strict, where a few percent
# matter; one in CI while it is undisturbed and within the 50% (the suite's time).
MIN_RUNS = 2 if STRICT else 1
# Calibration runs: always the fastest of two. Every prediction scales with the calibration, and
# nothing checks a calibration run against anything: one slow run (on 2026-12-05 a clean
# clone's calibration came out ~1.6x slow with no other process running and equal cores)
# made every layout's prediction 50-62% slower than its measurement. For the same reason, when
# every layout outside its tolerance is predicted slower than measured (a slow calibration can
# only inflate predictions), the calibration is run again, once, and the layouts are judged
# against the new plan.
CALIBRATION_RUNS = 2
DISTURBED = 0.15  # cores used by other processes, averaged over a run
SKIP = 77
LAYOUTS = [  # name, ranks, dp, tp, pp, micro_batches
    ("1 rank", 1, 1, 1, 1, 1),
    ("dp2", 2, 2, 1, 1, 1),
    ("tp2", 2, 1, 2, 1, 1),
    ("pp2", 2, 1, 1, 2, 4),
]


def fail(message, run=None):
    sys.exit(f"FAIL: {message}" + (f"\n{run.stdout}{run.stderr}" if run else ""))


def run(cmd, what, timeout=120):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if r.returncode != 0:
        fail(what, r)
    return r


def busy_seconds():
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(t) - t[3] - t[4]) / os.sysconf("SC_CLK_TCK")


def children_seconds():
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def core_spread():
    """How much slower this machine's slowest core runs a fixed loop than its fastest (0: equal)."""
    cores = sorted(os.sched_getaffinity(0))
    times = []
    try:
        for core in cores:
            os.sched_setaffinity(0, {core})
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                sum(i * i for i in range(200_000))
                best = min(best, time.perf_counter() - start)
            times.append(best)
    finally:
        os.sched_setaffinity(0, cores)
    return max(times) / min(times) - 1


def run_alone(cmd, what):
    """run(), the cores other processes used on average meanwhile, and the cores' spread."""
    spread = core_spread()
    busy, ours, start = busy_seconds(), children_seconds(), time.monotonic()
    r = run(cmd, what)
    wall = time.monotonic() - start
    others = (busy_seconds() - busy) - (children_seconds() - ours)
    return r, max(others, 0.0) / wall, max(spread, core_spread())


def main():
    root = tempfile.mkdtemp(prefix="hydra_plan_")
    os.makedirs(os.path.join(root, "text"))
    with open("/usr/share/common-licenses/GPL-3") as src, open(os.path.join(root, "text", "gpl3.txt"), "w") as dst:
        dst.write(src.read())
    run([HYDRA, "data", "prepare", "--input", os.path.join(root, "text"), "--output", os.path.join(root, "tokens"),
         "--tokenizer", "bytes", "--val-fraction", "0.1"], "data prepare")
    sets = [f"data.path={root}/tokens", "data.tokenizer=bytes", "model.vocab_size=256", "train.seq_len=64",
            "train.global_batch=8"]
    setargs = [w for s in sets for w in ("--set", s)]

    def bench(name, ranks, dp, tp, pp, m, batch=8, predicted_ms=None, tp_slice=None, min_runs=MIN_RUNS):
        # The fastest undisturbed run of at least MIN_RUNS: on a shared 2-core machine a run's mean
        # step moves by up to 2x with what else runs. More runs (up to ATTEMPTS) while there is
        # no undisturbed one, or, with a prediction, while the best is outside the tolerance.
        runs = []

        # Cores the run could lose to others without slowing: those its ranks leave free.
        spare = max((os.cpu_count() or 1) - ranks, 0)

        def best():
            clean = [r for r in runs if r["others_cores"] <= spare + DISTURBED and r["core_spread"] <= UNEQUAL]
            return min(clean or runs, key=lambda r: r["step_ms"]), bool(clean)

        while len(runs) < ATTEMPTS:
            runs.append(bench_once(name, ranks, dp, tp, pp, m, batch, len(runs) + 1, tp_slice))
            top, clean = best()
            if len(runs) >= min_runs and clean and not (predicted_ms and abs(predicted_ms / top["step_ms"] - 1) > TIME_TOL):
                break
        top, clean = best()
        top["attempts"], top["undisturbed"] = len(runs), clean
        top["others_cores_max"] = max(r["others_cores"] for r in runs)
        path = os.path.join(root, name.replace(" ", "_") + ".json")
        json.dump(top, open(path, "w"))
        return top

    def bench_once(name, ranks, dp, tp, pp, m, batch, attempt, tp_slice):
        out = os.path.join(root, name.replace(" ", "_") + f".{attempt}.json")
        extra = [f"parallel.dp={dp}", f"parallel.tp={tp}", f"parallel.pp={pp}", f"parallel.micro_batches={m}",
                 f"train.global_batch={batch}"]
        cmd = [HYDRA, "bench", "step", "--config", CONFIG, *setargs, *[w for s in extra for w in ("--set", s)],
               "--steps", "8", "--warmup", "2", "--json", out]
        if tp_slice:
            cmd += ["--tp-slice", str(tp_slice)]
        if ranks > 1:
            cmd = [MPIEXEC, *FLAGS, "-np", str(ranks), *cmd]
        _, others, spread = run_alone(cmd, f"bench step {name}")
        result = json.load(open(out))
        result["others_cores"], result["core_spread"] = others, spread
        return result

    def calibrate():
        bench("calibration b2", 1, 1, 1, 1, 1, batch=2, min_runs=CALIBRATION_RUNS)
        bench("calibration b8", 1, 1, 1, 1, 1, min_runs=CALIBRATION_RUNS)
        tp_slice = bench("calibration tp-slice 2", 1, 1, 1, 1, 1, tp_slice=2, min_runs=CALIBRATION_RUNS)
        if tp_slice.get("tp_slice") != 2 or tp_slice["world"] != 1:
            fail(f"the --tp-slice 2 run's JSON: tp_slice {tp_slice.get('tp_slice')}, world {tp_slice['world']}")
        return tp_slice

    tp_slice = calibrate()
    cal_path = ",".join(os.path.join(root, f"calibration_{n}.json") for n in ("b2", "b8", "tp-slice_2"))
    alone = subprocess.run([HYDRA, "plan", "--config", CONFIG, *setargs, "--cluster", CLUSTER, "--calibration",
                            os.path.join(root, "calibration_tp-slice_2.json")], capture_output=True, text=True)
    if alone.returncode != 2 or "only --tp-slice runs" not in alone.stderr:
        fail("hydra plan with a --tp-slice calibration alone: expected exit 2 naming it", alone)
    comm_path = os.path.join(root, "comm.json")
    run([MPIEXEC, *FLAGS, "-np", "2", HYDRA, "bench", "comm", "--config", CONFIG, *setargs, "--sizes", "4K,16K,64K,256K,1M",
         "--repeats", "5", "--json", comm_path], "bench comm")
    info_json = subprocess.run([HYDRA, "info", "--config", CONFIG, *setargs, "--json"], check=True,
                               capture_output=True, text=True).stdout
    info = json.loads(info_json)
    info = info.get("model", info)
    def predict():
        """Each layout's row of `hydra plan --json` for the current calibration."""
        plans = {}
        for gpus in (1, 2):
            path = os.path.join(root, f"plan{gpus}.json")
            run([HYDRA, "plan", "--config", CONFIG, *setargs, "--cluster", CLUSTER, "--gpus", str(gpus),
                 "--calibration", cal_path, "--comm", comm_path, "--json", path], f"plan --gpus {gpus}")
            plans[gpus] = json.load(open(path))["layouts"]
        rows = {}
        for name, ranks, dp, tp, pp, m in LAYOUTS:
            mb = 8 // dp // m
            match = [p for p in plans[ranks] if p["dp"] == dp and p["tp"] == tp and p["pp"] == pp and
                     p["zero_stage"] == 0 and p["micro_batch"] == mb and p["micro_batches"] == m and
                     p["recompute"] == "none"]
            if len(match) != 1 or not match[0]["feasible"]:
                fail(f"{name}: no feasible predicted layout in {match}")
            rows[name] = match[0]
        return rows

    predicted = predict()
    # The 1-rank row: a second run, not the calibration itself.
    measured_by_layout = {layout[0]: bench(*layout, predicted_ms=predicted[layout[0]]["ms"]["step"])
                          for layout in LAYOUTS}

    def time_error(name):
        """predicted / measured - 1 for the layout, against the current plan."""
        return predicted[name]["ms"]["step"] / measured_by_layout[name]["step_ms"] - 1

    time_misses = [name for name, m in measured_by_layout.items() if m["undisturbed"] and
                   abs(time_error(name)) > TIME_TOL]
    if time_misses and all(time_error(name) > 0 for name in time_misses):
        print("every layout outside its tolerance is predicted slower than measured: "
              f"{', '.join(time_misses)}; calibrating again")
        tp_slice = calibrate()
        predicted = predict()

    failures, unjudged = [], []
    print(f"{'layout':8} {'measured ms':>12} {'predicted ms':>13} {'time err':>9} {'plan mem GB':>12} "
          f"{'info mem GB':>12} {'mem err':>8} {'runs':>5} {'others':>7} {'cores':>6}")
    for name, *_ in LAYOUTS:
        p, measured = predicted[name], measured_by_layout[name]
        time_err = time_error(name)
        plan_gb = p["memory_bytes"]["peak"] * 1e-9
        mem_err = plan_gb / measured["predicted_peak_gb"] - 1
        print(f"{name:8} {measured['step_ms']:12.2f} {p['ms']['step']:13.2f} {time_err:+9.1%} {plan_gb:12.4f} "
              f"{measured['predicted_peak_gb']:12.4f} {mem_err:+8.1%} {measured['attempts']:5d} "
              f"{measured['others_cores']:7.2f} {measured['core_spread']:+6.0%}")
        if not measured["undisturbed"]:
            unjudged.append(f"{name} (in its fastest run other processes used {measured['others_cores']:.2f} cores, "
                            f"and its slowest core ran {measured['core_spread']:+.0%} against the fastest)")
        elif abs(time_err) > TIME_TOL:
            failures.append(f"{name}: time error {time_err:+.1%} > {TIME_TOL:.0%}")
        if abs(mem_err) > MEM_TOL:
            failures.append(f"{name}: memory error {mem_err:+.1%} > {MEM_TOL:.0%}")
        if name == "dp2":
            # bench step's calls_per_step against the parameter count: without ZeRO the data-parallel
            # group all-reduces the whole float32 gradient once a step (4 bytes a parameter), plus a
            # few scalars (the loss, the finite flag).
            grad_bytes = 4 * info["params_total"]
            got = measured["calls_per_step"]["dp"]["bytes"]
            print(f"dp2: the dp group moved {got:.0f} bytes a step; the float32 gradient is {grad_bytes} bytes")
            if not grad_bytes <= got <= grad_bytes + 1024:
                failures.append(f"dp2: calls_per_step.dp.bytes {got:.0f}, expected {grad_bytes} plus at most 1 KiB")
        if name == "tp2":
            # The slice makes the collectives of a real tp rank: the same calls, the same payloads.
            got, want = measured["calls_per_step"]["tp"], tp_slice["calls_per_step"]["tp"]
            print(f"tp2: {got['calls']:.0f} tp calls of {got['bytes']:.0f} bytes a step; the tp-slice run "
                  f"{want['calls']:.0f} of {want['bytes']:.0f}")
            if got != want:
                failures.append(f"tp2: calls_per_step.tp {got}, the --tp-slice 2 run's {want}")
    if failures:
        fail("; ".join(failures))
    if unjudged:
        print("SKIPPED: no undisturbed run of " + ", ".join(unjudged) + "; memory and every other layout pass")
        sys.exit(SKIP)
    print("PASS")


if __name__ == "__main__":
    main()
