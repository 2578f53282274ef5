#!/usr/bin/python3
"""`hydra plan` against measurement on one GPU (docs/SCALING.md, "Validation on one GPU").

  plan_validate_gpu.py HYDRA_BIN SOURCE_DIR OUT_DIR [SETS...]

For each model (small as shipped; 1b dense), `hydra bench step --json` runs at two batches
calibrate the achieved FLOP rate and the per-micro-batch overhead; `hydra plan --gpus 1 --calibration` then predicts the other
single-GPU layouts (batch, micro-batches, recompute), each measured with `hydra bench step`.
Writes OUT_DIR/plan-validate-gpu.json and prints the table: step time and peak memory,
predicted against measured (peak allocated), with the errors. SETS: more --set key=value for
every run (e.g. data.path=...).
"""
import json
import os
import subprocess
import sys

HYDRA, SOURCE, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
COMMON = ["train.device=cuda", "train.dtype=bf16"] + sys.argv[4:]
CLUSTER = os.path.join(SOURCE, "configs", "clusters", "h200-1x.yaml")
# model: (config, model sets, calibration points, validated points); a point is
# (global_batch, micro_batch, activation_checkpointing).
MODELS = {
    "small": ("small.yaml", [], [(8, 8, "none"), (32, 32, "none")],
              [(16, 16, "none"), (32, 16, "none"), (64, 64, "none"), (16, 16, "mlp"), (16, 16, "layer")]),
    "1b dense": ("1b.yaml", ["model.mod.enabled=false", "model.mor.recursions=1"], [(4, 4, "none"), (8, 8, "none")],
                 [(16, 8, "none"), (12, 12, "none"), (8, 8, "layer")]),
}


def sets_of(model_sets, point):
    batch, micro, recompute = point
    return COMMON + model_sets + [f"train.global_batch={batch}", f"train.micro_batch={micro}",
                                  f"train.activation_checkpointing={recompute}"]


def setargs(sets):
    return [w for s in sets for w in ("--set", s)]


def bench(config, sets, path):
    cmd = [HYDRA, "bench", "step", "--config", os.path.join(SOURCE, "configs", config), *setargs(sets),
           "--steps", "10", "--warmup", "3", "--json", path]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        return None
    return json.load(open(path))


def main():
    os.makedirs(OUT, exist_ok=True)
    rows = []
    print(f"{'model':9} {'batch':>5} {'micro':>5} {'recompute':9} {'measured ms':>11} {'predicted ms':>12} "
          f"{'time err':>8} {'measured GB':>11} {'predicted GB':>12} {'mem err':>8}")
    for name, (config, model_sets, cal_points, points) in MODELS.items():
        tag = name.replace(" ", "_")
        cal_paths = [os.path.join(OUT, f"bench-{tag}-{b}-{mb}-{rc}.json") for b, mb, rc in cal_points]
        if any(bench(config, sets_of(model_sets, p), path) is None for p, path in zip(cal_points, cal_paths)):
            rows.append({"model": name, "error": "calibration run failed"})
            continue
        for point in points:
            batch, micro, recompute = point
            measured = bench(config, sets_of(model_sets, point), os.path.join(OUT, f"bench-{tag}-{batch}-{micro}-{recompute}.json"))
            plan_path = os.path.join(OUT, f"plan-{tag}-{batch}.json")
            r = subprocess.run([HYDRA, "plan", "--config", os.path.join(SOURCE, "configs", config),
                                *setargs(sets_of(model_sets, point)), "--cluster", CLUSTER, "--gpus", "1",
                                "--calibration", ",".join(cal_paths), "--json", plan_path], capture_output=True, text=True)
            if measured is None or r.returncode != 0:
                rows.append({"model": name, "point": point, "error": (r.stderr or "bench step failed")[-500:]})
                continue
            match = [p for p in json.load(open(plan_path))["layouts"] if p["micro_batch"] == micro
                     and p["micro_batches"] == batch // micro and p["recompute"] == recompute and p["feasible"]]
            p = match[0]
            row = {"model": name, "global_batch": batch, "micro_batch": micro, "recompute": recompute,
                   "calibration": cal_points, "measured_step_ms": measured["step_ms"],
                   "predicted_step_ms": p["ms"]["step"], "measured_peak_gb": measured["peak_allocated_gb"],
                   "predicted_peak_gb": p["memory_bytes"]["peak"] / 1e9}
            row["time_error"] = row["predicted_step_ms"] / row["measured_step_ms"] - 1
            row["memory_error"] = row["predicted_peak_gb"] / row["measured_peak_gb"] - 1
            rows.append(row)
            print(f"{name:9} {batch:5d} {micro:5d} {recompute:9} {row['measured_step_ms']:11.2f} "
                  f"{row['predicted_step_ms']:12.2f} {row['time_error']:+8.1%} {row['measured_peak_gb']:11.2f} "
                  f"{row['predicted_peak_gb']:12.2f} {row['memory_error']:+8.1%}",
                  flush=True)
            json.dump({"cluster": CLUSTER, "sets": COMMON, "rows": rows},
                      open(os.path.join(OUT, "plan-validate-gpu.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
