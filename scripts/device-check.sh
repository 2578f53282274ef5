#!/usr/bin/env bash
# One call on the GPU machine does a whole check: build the CUDA flavour, run the `gpu`
# tests (the multi-GPU ones when there are GPUs for them) and the benchmarks, and write the
# results under $OUT (at most 8 files come back: keep it that way).
#   OUT=/tmp/out scripts/device-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
BUILD_DIR=${HYDRA_BUILD_DIR:-build-cuda}
export NCCL_NVLS_ENABLE=0   # NVLink multicast stays off on these machines
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nvcc --version | tail -1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} > "$OUT/device.txt" 2>&1
ngpu=$(nvidia-smi -L | wc -l)

TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
start=$(date +%s)
# HYDRA_SOURCE_COMMIT (e.g. "$(git rev-parse --short=12 HEAD)-dirty" from the machine that sent
# the tree) names the commit in `hydra --version` and the benchmarks' JSON: the .git found here
# may be an older one that the copy of the tree left behind.
if ! cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHYDRA_CUDA=ON \
     -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DHYDRA_GIT_COMMIT_OVERRIDE="${HYDRA_SOURCE_COMMIT:-}" > "$OUT/build.log" 2>&1 ||
   ! cmake --build "$BUILD_DIR" -j "$(nproc)" ${HYDRA_BUILD_TARGETS:+--target $HYDRA_BUILD_TARGETS} \
       >> "$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"
  echo "device-check: BUILD FAILED"
  exit 1
fi
echo "device-check: built in $(( $(date +%s) - start )) s on $ngpu GPU(s)"

# Parts can be skipped when device time is short: HYDRA_GPU_TESTS=0 (the gpu tests; then
# HYDRA_BUILD_TARGETS=hydra builds the executable alone), HYDRA_GPU_TESTS_REGEX=RE (only the gpu
# tests whose names match RE, e.g. those of code changed since the last full run), HYDRA_TRAIN_BENCH=0 (the training
# throughput runs), HYDRA_BENCH_ATTENTION=0, HYDRA_CKPT_TIMING=0 (below).
rc=0
if [ "${HYDRA_GPU_TESTS:-1}" != 0 ]; then
labels="gpu"
exclude="multigpu"
(( ngpu >= 2 )) && exclude="^$"   # multi-GPU tests need 2 GPUs
ctest --test-dir "$BUILD_DIR" -L "$labels" -LE "$exclude" ${HYDRA_GPU_TESTS_REGEX:+-R "$HYDRA_GPU_TESTS_REGEX"} \
  --output-on-failure > "$OUT/gpu-tests.log" 2>&1
rc=$?
grep -E "tests passed|tests failed|\*\*\*|Failed|Passed" "$OUT/gpu-tests.log" | tail -30
echo "device-check: gpu tests exit $rc"
fi

# The attention benchmark (issue 7, docs/PERF.md): CCQA fused vs reference vs GQA+flash.
# HYDRA_BENCH_ATTENTION=0 skips the attention benchmark (a few minutes) when device time is short.
if [ "${HYDRA_BENCH_ATTENTION:-1}" != 0 ]; then
  timeout 300 "$BUILD_DIR/hydra" bench attention --json "$OUT/bench-attention.json" 2>&1 | tail -16 ||
    echo "device-check: bench attention FAILED"
fi

# The collectives through our NCCL communicators (issue 18: `hydra bench comm`; a ceiling of
# NCCL's own to compare with is not measured here yet): every GPU of the machine as one world,
# 4 KiB to 1 GiB. Needs 2 GPUs; HYDRA_BENCH_COMM=0 skips it.
if (( ngpu >= 2 )) && [ "${HYDRA_BENCH_COMM:-1}" != 0 ]; then
  timeout 300 mpirun --allow-run-as-root -np "$ngpu" -x NCCL_NVLS_ENABLE "$BUILD_DIR/hydra" bench comm \
    --config configs/small.yaml --set train.device=cuda --json "$OUT/bench-comm.json" 2>&1 | tail -12 ||
    echo "device-check: bench comm FAILED"
fi

# Training throughput and memory of the `small` variant in bf16 on the prepared corpus that
# travels with the call (data-cache/gpu-tokens, made by `hydra data prepare`): one GPU, then,
# with several GPUs, data parallelism over all of them at ZeRO 0, 1 and 2 (and ZeRO 1 without the
# overlap of gradient reduction and backward, its baseline), tp 2 and pp 2, in
# the same call so the numbers compare. Every run's metrics rows (tok_s, mfu, mem_gb) are
# gathered into $OUT/train-small.json ({run: [rows]}); the logs go to $OUT/train.log.
DATA=${HYDRA_GPU_DATA:-data-cache/gpu-tokens}
if [ -f "$DATA/manifest.json" ] && [ "${HYDRA_TRAIN_BENCH:-1}" != 0 ]; then
  train_args=(train --config configs/small.yaml --set data.path="$DATA" --set train.device=cuda
              --set train.dtype=bf16 --set train.steps=${HYDRA_BENCH_STEPS:-40} --set train.global_batch=16
              --set train.micro_batch=8 --set train.seq_len=1024 --set train.warmup_steps=5
              --set train.lr=6e-4 --set train.min_lr=6e-5 --set train.eval_batches=2 --set log.every=10
              --set checkpoint.keep=1)
  runs=/tmp/hydra-bench-runs
  rm -rf /tmp/hydra-bench-ckpt* "$runs" && mkdir -p "$runs"
  : > "$OUT/train.log"
  # bench_run NAME NP [--set ...]: one training run (NP 1: no mpirun).
  bench_run() {
    local name=$1 np=$2
    shift 2
    local launch=("$BUILD_DIR/hydra")
    (( np > 1 )) && launch=(mpirun --allow-run-as-root -np "$np" -x NCCL_NVLS_ENABLE "$BUILD_DIR/hydra")
    echo "== $name" >> "$OUT/train.log"
    timeout 240 "${launch[@]}" "${train_args[@]}" "$@" --set log.jsonl="$runs/$name.jsonl" \
      --set checkpoint.dir="/tmp/hydra-bench-ckpt-$name" >> "$OUT/train.log" 2>&1 ||
      echo "device-check: training run $name FAILED (exit $?)"
  }
  bench_run 1gpu 1
  # The checkpoint it wrote loads back onto the GPU.
  latest=$(ls -d /tmp/hydra-bench-ckpt-1gpu/step_* 2>/dev/null | sort | tail -1)
  [ -n "$latest" ] && "$BUILD_DIR/hydra" eval "${train_args[@]:1}" --checkpoint "$latest" >> "$OUT/train.log" 2>&1 ||
    echo "device-check: eval of $latest FAILED"
  if (( ngpu >= 2 )); then
    for zero in 0 1 2; do bench_run "dp${ngpu}_zero$zero" "$ngpu" --set parallel.zero_stage=$zero; done
    # The baseline of the gradient-reduction overlap (on in the runs above): all buckets after backward.
    bench_run "dp${ngpu}_zero1_no_overlap" "$ngpu" --set parallel.zero_stage=1 --set parallel.overlap_grad_reduce=false
    # dp = GPUs / 2. small's CCQA layers have 3 query heads under the default `heads` layout,
    # which tp 2 cannot split: this run uses `head_dim` (12 heads of 16).
    bench_run tp2 "$ngpu" --set parallel.tp=2 --set model.ccqa.compress=head_dim
    bench_run pp2 "$ngpu" --set parallel.pp=2 --set train.micro_batch=2  # micro-batches of 2: several in flight
  fi
  python3 - "$runs" > "$OUT/train-small.json" <<'PY'
import json, os, sys
runs = sys.argv[1]
out = {}
for f in sorted(os.listdir(runs)):
    if f.endswith(".jsonl"):
        out[f[:-6]] = [json.loads(l) for l in open(os.path.join(runs, f)) if l.strip()]
print(json.dumps(out, indent=1))
PY
  grep -E "^== |step 40|error|fatal|train:|eval:" "$OUT/train.log" | tail -30
fi

# Decoding speed (issue 19; HYDRA_DECODE_BENCH=1, off by default: beside the other sections its
# file would be a ninth): `hydra generate` on dense `small` (MoD off, one recursion: the model
# the baseline has) in bf16 from a 2-step checkpoint, prefill, batch 1 and batch 64 with the
# decode steps in CUDA graphs and (-eager rows) without, beside bench/torch_decode.py (the same
# model in PyTorch with static caches: eager, torch.compile, reduce-overhead) at the same prompt
# length and new tokens; all rows into $OUT/decode-small.json.
if [ "${HYDRA_DECODE_BENCH:-0}" = 1 ] && [ -f "$DATA/manifest.json" ]; then
  dec=/tmp/hydra-decode
  rm -rf "$dec" && mkdir -p "$dec"
  # 64 new tokens: batch 64 at the session-12 rate (72 tokens/s) is already a minute; and two
  # torch modes (compiling takes a minute or more each): 128 tokens and three modes ran out of a
  # 330 s call (2026-12-04, PERF.md).
  new=${HYDRA_DECODE_NEW:-64}
  dec_args=(--config configs/small.yaml --set data.path="$DATA" --set train.device=cuda --set train.dtype=bf16
            --set train.seq_len=1024 --set model.mod.enabled=false --set model.mor.recursions=1)
  "$BUILD_DIR/hydra" train "${dec_args[@]}" --set train.steps=2 --set train.global_batch=8 --set train.micro_batch=8 \
    --set train.eval_every=0 --set checkpoint.dir="$dec/ck" --set log.jsonl="$dec/train.jsonl" > "$dec/train.log" 2>&1 ||
    echo "device-check: the decoding benchmark's training run FAILED"
  # A prompt of plain English, about 500 tokens.
  python3 -c 'print(" ".join(["The committee met on a grey morning to read the reports of the year, and each of"
                              " them had something to say about the harbour, the roads and the price of bread."] * 22))' \
    > "$dec/prompt.txt"
  ck=$(ls -d "$dec"/ck/step_* 2>/dev/null | sort | tail -1)
  gen=("$BUILD_DIR/hydra" generate "${dec_args[@]}" --checkpoint "$ck" --prompt-file "$dec/prompt.txt" --json)
  timeout 300 "${gen[@]}" --max-new 1 --temperature 0 > "$dec/hydra-prefill.json" 2> "$dec/hydra-prefill.err"
  timeout 300 "${gen[@]}" --max-new "$new" --temperature 0 > "$dec/hydra-b1.json" 2> "$dec/hydra-b1.err"
  timeout 300 "${gen[@]}" --max-new "$new" --batch 64 --temperature 1 > "$dec/hydra-b64.json" 2> "$dec/hydra-b64.err"
  timeout 300 "${gen[@]}" --max-new "$new" --temperature 0 --set train.cuda_graphs=off > "$dec/hydra-b1-eager.json" \
    2> "$dec/hydra-b1-eager.err"
  timeout 300 "${gen[@]}" --max-new "$new" --batch 64 --temperature 1 --set train.cuda_graphs=off \
    > "$dec/hydra-b64-eager.json" 2> "$dec/hydra-b64-eager.err"
  prompt_len=$(python3 -c "import json; print(json.load(open('$dec/hydra-b1.json'))['prompt_tokens'])" 2>/dev/null || echo 512)
  timeout 600 python3 bench/torch_decode.py --config configs/small.yaml --set mod.enabled=false --set mor.recursions=1 \
    --batch 1 64 --prompt-len "$prompt_len" \
    --new "$new" --modes "${HYDRA_DECODE_MODES:-eager,reduce-overhead}" --json "$dec/torch.json" > "$dec/torch.log" 2>&1 ||
    echo "device-check: torch_decode.py FAILED"
  python3 - "$dec" > "$OUT/decode-small.json" <<'PY'
import json, os, sys
d = sys.argv[1]
out = {}
for name in ("hydra-prefill", "hydra-b1", "hydra-b64", "hydra-b1-eager", "hydra-b64-eager"):
    try:
        row = json.load(open(os.path.join(d, name + ".json")))
        row.pop("tokens", None), row.pop("text", None)
        for c in row.get("continuations", []):
            c.pop("tokens", None), c.pop("text", None)
        out[name] = row
    except Exception as e:
        out[name] = {"error": str(e), "stderr": open(os.path.join(d, name + ".err")).read()[-2000:]}
try:
    out["torch"] = json.load(open(os.path.join(d, "torch.json")))
except Exception as e:
    out["torch"] = {"error": str(e), "log": open(os.path.join(d, "torch.log")).read()[-3000:]}
print(json.dumps(out, indent=1))
PY
  head -c 3000 "$OUT/decode-small.json"
fi

# Checkpoint timing (docs/CHECKPOINT.md) for the largest variant that fits one GPU comfortably
# (configs/1b.yaml, bf16; HYDRA_CKPT_CONFIG overrides, HYDRA_CKPT_TIMING=0 skips): saves at
# steps 2, 4 and 5, synchronous and then checkpoint.async, and a resume (the load). The
# trainer reports each save's stall of the loop, its write time and the load time in the
# metrics rows (ckpt_*); they are gathered into $OUT/checkpoint-timing.json. One checkpoint is
# ~17 GB (bf16 weights, fp32 master and moments): at most two exist at a time.
CKPT_CONFIG=${HYDRA_CKPT_CONFIG:-configs/1b.yaml}
if [ -f "$DATA/manifest.json" ] && [ "${HYDRA_CKPT_TIMING:-1}" != 0 ]; then
  ck_args=(train --config "$CKPT_CONFIG" --set data.path="$DATA" --set train.device=cuda --set train.dtype=bf16
           --set train.global_batch=2 --set train.micro_batch=1 --set train.seq_len=512 --set train.warmup_steps=1
           --set train.eval_batches=1 --set log.every=1 --set checkpoint.every=2 --set checkpoint.keep=1)
  ck=/tmp/hydra-ckpt-timing
  rm -rf "$ck" && mkdir -p "$ck"
  for mode in sync async; do
    async=false; [ "$mode" = async ] && async=true
    timeout 420 "$BUILD_DIR/hydra" "${ck_args[@]}" --set train.steps=5 --set checkpoint.async=$async \
      --set checkpoint.dir="$ck/$mode" --set log.jsonl="$ck/$mode.jsonl" >> "$OUT/train.log" 2>&1 ||
      echo "device-check: checkpoint timing ($mode saves) FAILED (exit $?)"
    if [ "$mode" = sync ]; then  # the load: resume the step-5 checkpoint for one more step
      timeout 300 "$BUILD_DIR/hydra" "${ck_args[@]}" --set train.steps=6 --set checkpoint.dir="$ck/sync" \
        --set log.jsonl="$ck/load.jsonl" --resume latest >> "$OUT/train.log" 2>&1 ||
        echo "device-check: checkpoint timing (load) FAILED (exit $?)"
      du -sb "$ck/sync"/step_* 2>/dev/null | tail -1 | cut -f1 > "$ck/bytes"
      rm -rf "$ck/sync"
    fi
  done
  python3 - "$ck" "$CKPT_CONFIG" > "$OUT/checkpoint-timing.json" <<'PY'
import json, os, sys
ck, config = sys.argv[1], sys.argv[2]
def rows(name):
    path = os.path.join(ck, name + ".jsonl")
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []
def field(name, key):
    return [r[key] for r in rows(name) if key in r]
size = open(os.path.join(ck, "bytes")).read().strip() if os.path.exists(os.path.join(ck, "bytes")) else ""
print(json.dumps({
    "config": config, "checkpoint_bytes": int(size) if size else None,
    "note": "saves at steps 2 and 4 are reported in rows 3 and 5; async stall = host copy + wait/commit of the previous save",
    "sync_save_ms": field("sync", "ckpt_stall_ms"),
    "async_stall_ms": field("async", "ckpt_stall_ms"),
    "async_host_copy_ms": field("async", "ckpt_copy_ms"),
    "async_background_write_ms": field("async", "ckpt_write_ms"),
    "load_ms": field("load", "ckpt_load_ms"),
}, indent=1))
PY
  cat "$OUT/checkpoint-timing.json"
  rm -rf "$ck"
fi
exit $rc
