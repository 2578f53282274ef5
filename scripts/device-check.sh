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
tail -40 "$OUT/gpu-tests.log"
echo "device-check: gpu tests exit $rc"
exit $rc
