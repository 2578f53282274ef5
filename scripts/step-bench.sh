#!/usr/bin/env bash
# The whole training step on one GPU, hydra side by side with its PyTorch baseline in the same
# call (bench/torch_baseline.py: the same dense model, eager, torch.compile and
# reduce-overhead): tok/s, step time, peak memory and MFU for each batch size, into
# $OUT/step-bench.json ({"hydra": [rows], "torch": [rows]}) and a log in $OUT/step-bench.log.
#   OUT=dir scripts/step-bench.sh [CONFIG] [BATCHES] [MODES]
#   defaults: configs/small.yaml, "8 16 32", eager,compile,reduce-overhead
# Needs the CUDA build (HYDRA_BUILD_DIR, default build-cuda, e.g. from scripts/device-check.sh)
# and a prepared corpus for hydra (HYDRA_GPU_DATA, default data-cache/gpu-tokens; the
# baseline draws random tokens). Each hydra row: the mean tok/s of the logged windows after
# the first (the first holds the warm-up), the largest mem_gb, and MFU as hydra reports it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
BUILD_DIR=${HYDRA_BUILD_DIR:-build-cuda}
CONFIG=${1:-configs/small.yaml}
BATCHES=${2:-8 16 32}
MODES=${3:-eager,compile,reduce-overhead}
DATA=${HYDRA_GPU_DATA:-data-cache/gpu-tokens}
STEPS=${HYDRA_STEP_BENCH_STEPS:-30}
SEQ=${HYDRA_STEP_BENCH_SEQ:-1024}
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
log="$OUT/step-bench.log"
runs=/tmp/hydra-step-bench
rm -rf "$runs" && mkdir -p "$runs"
: > "$log"

fpt=$("$BUILD_DIR/hydra" info --config "$CONFIG" --set train.seq_len="$SEQ" --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["model"]["flops_per_token"])')
echo "step-bench: $CONFIG, seq $SEQ, batches $BATCHES, $fpt FLOPs/token" | tee -a "$log"

for b in $BATCHES; do
  echo "== hydra batch $b" >> "$log"
  timeout 300 "$BUILD_DIR/hydra" train --config "$CONFIG" --set data.path="$DATA" --set train.device=cuda \
    --set train.dtype=bf16 --set train.steps="$STEPS" --set train.global_batch="$b" --set train.micro_batch="$b" \
    --set train.seq_len="$SEQ" --set train.warmup_steps=5 --set train.eval_batches=1 --set log.every=5 \
    --set log.jsonl="$runs/hydra-b$b.jsonl" --set checkpoint.dir="$runs/ckpt-b$b" --set checkpoint.keep=1 \
    >> "$log" 2>&1 || echo "step-bench: hydra batch $b FAILED (exit $?; out of memory?)" | tee -a "$log"
done
# One process per batch size: torch.compile would otherwise recompile with dynamic shapes.
for b in $BATCHES; do
  echo "== torch batch $b" >> "$log"
  timeout 300 python3 bench/torch_baseline.py --config "$CONFIG" --batch "$b" --seq-len "$SEQ" --modes "$MODES" \
    --flops-per-token "$fpt" --json "$runs/torch-b$b.json" >> "$log" 2>&1 ||
    echo "step-bench: torch baseline batch $b FAILED (exit $?)" | tee -a "$log"
done

python3 - "$runs" "$CONFIG" "$SEQ" > "$OUT/step-bench.json" <<'PY'
import glob, json, os, sys
runs, config, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
hydra = []
for f in sorted(glob.glob(os.path.join(runs, "hydra-b*.jsonl"))):
    batch = int(os.path.basename(f)[7:-6])
    rows = [json.loads(l) for l in open(f) if l.strip()]
    timed = [r for r in rows[1:] if r.get("tok_s")]  # the first row holds the warm-up
    if not timed:
        continue
    tok_s = sum(r["tok_s"] for r in timed) / len(timed)
    mfu = [r["mfu"] for r in timed if r.get("mfu")]
    hydra.append({"batch": batch, "seq_len": seq, "tok_s": round(tok_s, 1), "step_ms": round(batch * seq / tok_s * 1e3, 2),
                  "peak_gb": max(r.get("mem_gb", 0) for r in rows), "mfu": round(sum(mfu) / len(mfu), 4) if mfu else None,
                  "last_loss": rows[-1]["loss"], "windows": len(timed)})
torch_rows = [row for f in sorted(glob.glob(os.path.join(runs, "torch-b*.json"))) for row in json.load(open(f))]
print(json.dumps({"config": config, "hydra": hydra, "torch": torch_rows}, indent=1))
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
    print(f"batch {b}: hydra {r['tok_s']:.0f} tok/s ({r['peak_gb']} GB), best torch {best.get(b, 0):.0f}: {ratio:.2f}x")
for r in d["torch"]:
    print(f"torch {r['mode']:16s} batch {r['batch']}: {r.get('tok_s', 'n/a')} tok/s, peak {r.get('peak_gb', 'n/a')} GB")
PY
