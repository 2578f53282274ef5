#!/usr/bin/env bash
# Setup (install + build), then the whole ctest suite: unit and mpirun tests (CPU flavour).
#   scripts/test.sh [extra ctest args, e.g. -L unit or -R grid]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${HYDRA_BUILD_DIR:-build}
start=$(date +%s)
# One job per core; multi-rank tests are RUN_SERIAL (tests/CMakeLists.txt), so they run alone.
ctest --test-dir "$BUILD_DIR" --output-on-failure --label-exclude gpu -j "$(nproc)" "$@"
echo "test: suite took $(( $(date +%s) - start )) s"
