#!/usr/bin/python3
"""`hydra bench comm` under mpirun on the CPU (MPI backend): 4 ranks at tp 2 x dp 2.

  check_bench_comm.py HYDRA_BIN SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]

Checks the JSON it writes: one row per group (world of 4; tp and dp of 2; pp of 1 has none),
collective and size; every figure recomputed here from the definitions of docs/INTERFACE.md
(algbw = bytes / time; busbw = algbw x 2(n-1)/n for all-reduce, (n-1)/n for reduce-scatter and
all-gather, 1 for point-to-point); the ranks' results were checked by the command itself (a
wrong one is exit 4). And the refusals: one process, a size that is not a whole number of floats.
"""
import json
import os
import subprocess
import sys
import tempfile

HYDRA, SOURCE, MPIEXEC, FLAGS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
CONFIG = os.path.join(SOURCE, "configs", "tiny.yaml")
SIZES = [4096, 65536, 12]
OPS = ["all_reduce", "reduce_scatter", "all_gather", "p2p"]
FACTOR = {"all_reduce": lambda n: 2 * (n - 1) / n, "reduce_scatter": lambda n: (n - 1) / n,
          "all_gather": lambda n: (n - 1) / n, "p2p": lambda n: 1.0}


def fail(message, run=None):
    sys.exit(f"FAIL: {message}" + (f"\n{run.stdout}{run.stderr}" if run else ""))


def main():
    root = tempfile.mkdtemp(prefix="hydra_bench_comm_")
    out = os.path.join(root, "comm.json")
    run = subprocess.run([MPIEXEC, *FLAGS, "-np", "4", HYDRA, "bench", "comm", "--config", CONFIG, "--set",
                          "parallel.tp=2", "--sizes", "4K,64K,12", "--repeats", "2", "--json", out],
                         capture_output=True, text=True, timeout=240)
    if run.returncode != 0:
        fail(f"exit {run.returncode}", run)
    report = json.load(open(out))
    if report["backend"] != "mpi" or report["world"] != 4 or report["layout"] != "dp 2 x tp 2 x pp 1":
        fail(f"header {report}")
    want = [(g, n, op, b) for g, n in (("world", 4), ("tp", 2), ("dp", 2)) for b in SIZES for op in OPS]
    got = [(r["group"], r["ranks"], r["op"], r["bytes"]) for r in report["rows"]]
    if got != want:
        fail(f"rows {got}, expected {want}")
    for r in report["rows"]:
        algbw = r["bytes"] / (r["ms"] * 1e-3) / 1e9
        if not r["ms"] > 0 or abs(r["algbw_gbs"] - algbw) > 1e-9 * algbw:
            fail(f"algbw of {r}: expected {algbw}")
        busbw = algbw * FACTOR[r["op"]](r["ranks"])
        if abs(r["busbw_gbs"] - busbw) > 1e-9 * busbw:
            fail(f"busbw of {r}: expected {busbw}")
    if "bench comm: tp all_reduce 64 KiB (2 ranks)" not in run.stdout + run.stderr:
        fail("no progress line for tp all_reduce 64 KiB", run)
    # Refusals, before anything runs: exit 2 and a message that names the problem.
    for args, np, words in (([], 1, "mpirun -np N"), (["--sizes", "4K,6"], 2, "'6'"), (["--sizes", "4X"], 2, "'4X'")):
        cmd = [HYDRA] if np == 1 else [MPIEXEC, *FLAGS, "-np", str(np), HYDRA]
        bad = subprocess.run([*cmd, "bench", "comm", "--config", CONFIG, *args], capture_output=True, text=True,
                             timeout=120)
        if bad.returncode != 2 or words not in bad.stderr:
            fail(f"{args} on {np} ranks: exit {bad.returncode}, expected 2 naming {words}", bad)
    print("bench comm: every row and figure as defined")


if __name__ == "__main__":
    main()
