#!/usr/bin/env bash
# Setup (install + build), then the demo: the tiny HYDRA model's config, grid and sizes.
# (Training on a real corpus arrives with the training issue.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${HYDRA_BUILD_DIR:-build}
"$BUILD_DIR/hydra" info --config configs/tiny.yaml
