#!/usr/bin/env bash
# The demo: install what is missing, build, fetch a real English corpus (Debian's fortunes
# and the GCIDE dictionary) and GPT-2's tokenizer, tokenize it, train the tiny HYDRA model
# (MQA, CCQA and MLA layers, Mixture-of-Depths, Mixture-of-Recursions) on 2 CPU cores,
# evaluate the checkpoint, and read the checkpoint back with h5py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${HYDRA_BUILD_DIR:-build}
HYDRA="$BUILD_DIR/hydra"

bash scripts/fetch-tokenizer.sh >/dev/null
corpus=$(bash scripts/fetch-corpus.sh)
if [ ! -f data-cache/corpus/tokens/manifest.json ]; then
  "$HYDRA" data prepare --input "$corpus" --output data-cache/corpus/tokens
fi

start=$(date +%s)
rm -rf runs/tiny
"$HYDRA" info --config configs/tiny.yaml
"$HYDRA" train --config configs/tiny.yaml
latest=$(ls -d runs/tiny/checkpoints/step_* | sort | tail -1)
"$HYDRA" eval --config configs/tiny.yaml --checkpoint "$latest"

echo "demo: the checkpoint as h5py sees it ($latest):"
/usr/bin/python3 - "$latest" <<'PY'
import sys, h5py
d = sys.argv[1]
with h5py.File(d + "/index.h5") as f:
    print("  step", f.attrs["step"], "tokens", f.attrs["tokens"])
with h5py.File(d + "/rank_00000.h5") as f:
    names = sorted(f["model"].keys())
    total = sum(f["model"][n].size for n in names)
    print(f"  {len(names)} parameters, {total:,} values; embed.weight", f["model"]["embed.weight"].shape,
          f["model"]["embed.weight"].dtype)
PY
/usr/bin/python3 scripts/plot-perf.py runs/tiny/metrics.jsonl > /dev/null  # -> runs/tiny/metrics.png
echo "demo: metrics in runs/tiny/metrics.jsonl; loss, learning rate, gradient norm and throughput plotted in runs/tiny/metrics.png; trained and evaluated in $(( $(date +%s) - start )) s"
