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
if ! cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHYDRA_CUDA=ON \
     -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" > "$OUT/build.log" 2>&1 ||
   ! cmake --build "$BUILD_DIR" -j "$(nproc)" >> "$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"
  echo "device-check: BUILD FAILED"
  exit 1
fi
echo "device-check: built in $(( $(date +%s) - start )) s on $ngpu GPU(s)"

labels="gpu"
exclude="multigpu"
(( ngpu >= 2 )) && exclude="^$"   # multi-GPU tests need 2 GPUs
ctest --test-dir "$BUILD_DIR" -L "$labels" -LE "$exclude" --output-on-failure \
  > "$OUT/gpu-tests.log" 2>&1
rc=$?
grep -E "tests passed|tests failed|\*\*\*|Failed|Passed" "$OUT/gpu-tests.log" | tail -30
echo "device-check: gpu tests exit $rc"

# Training throughput of the `small` variant in bf16 on the prepared corpus that travels with
# the call (data-cache/gpu-tokens, made by `hydra data prepare`): one GPU, then data
# parallelism over all GPUs, in the same call so the numbers compare.
DATA=${HYDRA_GPU_DATA:-data-cache/gpu-tokens}
if [ -f "$DATA/manifest.json" ]; then
  train_args=(train --config configs/small.yaml --set data.path="$DATA" --set train.device=cuda
              --set train.dtype=bf16 --set train.steps=${HYDRA_BENCH_STEPS:-40} --set train.global_batch=16
              --set train.micro_batch=8 --set train.seq_len=1024 --set train.warmup_steps=5
              --set train.lr=6e-4 --set train.min_lr=6e-5 --set train.eval_batches=2 --set log.every=10
              --set checkpoint.keep=1)
  rm -rf /tmp/hydra-bench-ckpt*
  timeout 240 "$BUILD_DIR/hydra" "${train_args[@]}" --set log.jsonl="$OUT/train-small-1gpu.jsonl" \
    --set checkpoint.dir=/tmp/hydra-bench-ckpt-1 \
    > "$OUT/train.log" 2>&1 || echo "device-check: 1-GPU training FAILED (exit $?)"
  # The checkpoint it wrote loads back onto the GPU.
  latest=$(ls -d /tmp/hydra-bench-ckpt-1/step_* 2>/dev/null | sort | tail -1)
  [ -n "$latest" ] && "$BUILD_DIR/hydra" eval "${train_args[@]:1}" --checkpoint "$latest" >> "$OUT/train.log" 2>&1 ||
    echo "device-check: eval of $latest FAILED"
  if (( ngpu >= 2 )); then
    timeout 240 mpirun --allow-run-as-root -np "$ngpu" -x NCCL_NVLS_ENABLE "$BUILD_DIR/hydra" "${train_args[@]}" \
      --set log.jsonl="$OUT/train-small-${ngpu}gpu.jsonl" --set checkpoint.dir=/tmp/hydra-bench-ckpt-dp \
      >> "$OUT/train.log" 2>&1 || echo "device-check: ${ngpu}-GPU training FAILED (exit $?)"
    # Tensor parallelism over NCCL: tp 2 (and dp = GPUs / 2).
    timeout 240 mpirun --allow-run-as-root -np "$ngpu" -x NCCL_NVLS_ENABLE "$BUILD_DIR/hydra" "${train_args[@]}" \
      --set parallel.tp=2 --set log.jsonl="$OUT/train-small-tp2.jsonl" --set checkpoint.dir=/tmp/hydra-bench-ckpt-tp \
      >> "$OUT/train.log" 2>&1 || echo "device-check: tp2 training FAILED (exit $?)"
  fi
  grep -E "step 40|error|fatal|train:|eval:|checkpoint:" "$OUT/train.log" | tail -20
fi
exit $rc
