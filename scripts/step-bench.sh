#!/usr/bin/env bash
# The whole training step on one GPU, hydra side by side with its PyTorch baseline in the same
# call (bench/torch_baseline.py: the same dense model, eager, torch.compile and
# reduce-overhead): tok/s, step time, peak memory and MFU for each batch size, into
# $OUT/step-bench.json ({"hydra": [rows], "torch": [rows], "gpu_time": [trace summaries]}) and a
# log in $OUT/step-bench.log. HYDRA_STEP_BENCH_TRACE=1 also profiles 3 steps of each
# (bench/trace_summary.py: kernels by category, GPU busy time).
#   OUT=dir scripts/step-bench.sh [CONFIG] [BATCHES] [MODES]
#   defaults: configs/small.yaml, "8 16 32", eager,compile,reduce-overhead ("" : hydra alone)
# HYDRA_STEP_BENCH_GRAPHS: the train.cuda_graphs values hydra runs with (default auto; "off auto"
# for both); HYDRA_STEP_BENCH_MODEL_SETS: model keys for both sides, e.g. the dense 1b:
# "mod.enabled=false mor.recursions=1". Each hydra row carries hydra info's predicted peak.
# Needs the CUDA build (HYDRA_BUILD_DIR, default build-cuda, e.g. from scripts/device-check.sh)
# and a prepared corpus for hydra (HYDRA_GPU_DATA, default data-cache/gpu-tokens; the
# baseline draws random tokens). Each hydra row comes from `hydra bench step --json`; its
# peak_gb is the caching allocator's peak, as the baseline's (torch.cuda.max_memory_allocated).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
BUILD_DIR=${HYDRA_BUILD_DIR:-build-cuda}
CONFIG=${1:-configs/small.yaml}
BATCHES=${2:-8 16 32}
MODES=${3-eager,compile,reduce-overhead}
DATA=${HYDRA_GPU_DATA:-data-cache/gpu-tokens}
STEPS=${HYDRA_STEP_BENCH_STEPS:-20}
TRACE=${HYDRA_STEP_BENCH_TRACE:-0}  # 1: also profile 3 steps of each and summarise where the GPU time goes
SEQ=${HYDRA_STEP_BENCH_SEQ:-1024}
GRAPHS=${HYDRA_STEP_BENCH_GRAPHS:-auto}  # train.cuda_graphs values to run hydra with, e.g. "off auto"
# Model keys for both (space-separated key=value under model., e.g. "mod.enabled=false mor.recursions=1").
MODEL_SETS=${HYDRA_STEP_BENCH_MODEL_SETS:-}
hydra_sets=() torch_sets=()
for kv in $MODEL_SETS; do hydra_sets+=(--set "model.$kv"); torch_sets+=(--set "$kv"); done
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
log="$OUT/step-bench.log"
runs=/tmp/hydra-step-bench
rm -rf "$runs" && mkdir -p "$runs"
: > "$log"

fpt=$("$BUILD_DIR/hydra" info --config "$CONFIG" "${hydra_sets[@]}" --set train.seq_len="$SEQ" --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["model"]["flops_per_token"])')
echo "step-bench: $CONFIG, seq $SEQ, batches $BATCHES, $fpt FLOPs/token" | tee -a "$log"

# hydra bench step: the training step alone (no evaluation, checkpoints or metrics file),
# timed on the host clock between synchronisations, with the device time of each phase.
for b in $BATCHES; do
  for g in $GRAPHS; do
    echo "== hydra batch $b, cuda_graphs $g" >> "$log"
    trace=()
    if [ "$TRACE" = 1 ]; then trace=(--trace "$runs/trace-hydra-b$b-$g.json"); fi
    timeout 300 "$BUILD_DIR/hydra" bench step --config "$CONFIG" "${hydra_sets[@]}" --set data.path="$DATA" --set train.device=cuda \
      --set train.dtype=bf16 --set train.global_batch="$b" --set train.micro_batch="$b" --set train.seq_len="$SEQ" \
      --set train.warmup_steps=5 --set train.cuda_graphs="$g" --warmup 5 --steps "$STEPS" \
      --json "$runs/hydra-b$b-$g.json" "${trace[@]}" \
      >> "$log" 2>&1 || echo "step-bench: hydra batch $b (cuda_graphs $g) FAILED (exit $?; docs/INTERFACE.md lists the codes; the log's last error says why)" | tee -a "$log"
    if [ "$TRACE" = 1 ] && [ -f "$runs/trace-hydra-b$b-$g.json" ]; then
      python3 bench/trace_summary.py "$runs/trace-hydra-b$b-$g.json" --steps 3 --label "hydra b$b graphs $g" \
        --json "$runs/summary-hydra-b$b-$g.json" >> "$log" 2>&1
    fi
  done
done
# One process per batch size: torch.compile would otherwise recompile with dynamic shapes.
# MODES "" skips the baseline (hydra alone).
[ -n "$MODES" ] && for b in $BATCHES; do
  echo "== torch batch $b" >> "$log"
  trace=()
  if [ "$TRACE" = 1 ]; then trace=(--trace-dir "$runs"); fi
  timeout 400 python3 bench/torch_baseline.py --config "$CONFIG" "${torch_sets[@]}" --batch "$b" --seq-len "$SEQ" --modes "$MODES" \
    --flops-per-token "$fpt" --json "$runs/torch-b$b.json" "${trace[@]}" >> "$log" 2>&1 ||
    echo "step-bench: torch baseline batch $b FAILED (exit $?)" | tee -a "$log"
  if [ "$TRACE" = 1 ]; then
    for m in ${MODES//,/ }; do
      [ -f "$runs/torch-$m-b$b.json" ] && python3 bench/trace_summary.py "$runs/torch-$m-b$b.json" --steps 3 \
        --label "torch $m b$b" --json "$runs/summary-torch-$m-b$b.json" >> "$log" 2>&1
    done
  fi
done

device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
python3 - "$runs" "$CONFIG" "$SEQ" "${device:-unknown}" "$(date -u +%Y-%m-%d)" > "$OUT/step-bench.json" <<'PY'
import glob, json, os, sys
runs, config, seq, device, date = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
hydra = []
for f in sorted(glob.glob(os.path.join(runs, "hydra-b*.json"))):
    r = json.load(open(f))
    hydra.append({"batch": r["global_batch"], "seq_len": r["seq_len"], "cuda_graphs": r.get("cuda_graphs", False),
                  "tok_s": round(r["tok_s"], 1),
                  "step_ms": round(r["step_ms"], 2), "mfu": round(r["mfu"], 4) if "mfu" in r else None,
                  "peak_gb": round(r["peak_allocated_gb"], 3), "peak_reserved_gb": round(r["peak_reserved_gb"], 3),
                  "predicted_peak_gb": round(r.get("predicted_peak_gb", 0), 3),
                  "device_used_gb": round(r["device_used_gb"], 3), "host_submit_ms": round(r["host_submit_ms"], 2),
                  "phase_ms": {k: round(v, 2) for k, v in r["phase_ms"].items()}, "last_loss": r["last_loss"],
                  "steps": r["steps"], "version": r["version"]})
torch_rows = [row for f in sorted(glob.glob(os.path.join(runs, "torch-b*.json"))) for row in json.load(open(f))]
summaries = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(runs, "summary-*.json")))]
print(json.dumps({"config": config, "device": device, "date": date, "hydra": hydra, "torch": torch_rows,
                  "gpu_time": summaries}, indent=1))
PY
python3 - "$OUT/step-bench.json" <<'PY' | tee -a "$log"
import json, sys
d = json.load(open(sys.argv[1]))
best = {}
for r in d["torch"]:
    if "tok_s" in r:
        best[r["batch"]] = max(best.get(r["batch"], 0), r["tok_s"])
for r in d["hydra"]:
    b = r["batch"]
    ratio = r["tok_s"] / best[b] if best.get(b) else float("nan")
    print(f"batch {b}, cuda graphs {'on' if r['cuda_graphs'] else 'off'}: hydra {r['tok_s']:.0f} tok/s (peak allocated {r['peak_gb']} GB, predicted {r['predicted_peak_gb']} GB, host submits a step in "
          f"{r['host_submit_ms']} of {r['step_ms']} ms), best torch {best.get(b, 0):.0f}: {ratio:.2f}x")
for r in d["torch"]:
    print(f"torch {r['mode']:16s} batch {r['batch']}: {r.get('tok_s', 'n/a')} tok/s, peak {r.get('peak_gb', 'n/a')} GB")
PY
