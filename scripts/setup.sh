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
  libopenmpi-dev openmpi-bin                    # launch, bootstrap, CPU collectives
  libhdf5-dev                                   # checkpoints
  libyaml-cpp-dev libspdlog-dev                 # config, logging
  googletest libgtest-dev                       # tests
  python3 python3-h5py python3-numpy            # tests read checkpoints as users would
)

missing=()
for p in "${PACKAGES[@]}"; do
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

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$jobs"
echo "setup: built $BUILD_DIR/hydra"
