#!/usr/bin/env bash
# Assembles a corpus of real English text (about 43 MB) from Debian packages into
# OUT_DIR/text/ (default: data-cache/corpus/ in the source tree) and prints that directory:
#   fortunes, fortunes-min  /usr/share/games/fortunes/*  -> fortunes-NAME.txt (2.8 MB)
#   dict-gcide              GCIDE, the Collaborative International Dictionary of English
#                           (/usr/share/dictd/gcide.dict.dz)  -> gcide-NN.txt (40 MB)
# Installs the packages with apt-get when missing. Idempotent: a complete text/ made from
# the same package versions is kept. GCIDE holds a few stray Windows-1252 bytes; they are
# dropped (iconv -c) so that every file is valid UTF-8, as `hydra data prepare` requires.
# Next step:  build/hydra data prepare --input OUT_DIR/text --output OUT_DIR/tokens
#   scripts/fetch-corpus.sh [OUT_DIR]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/data-cache/corpus}
PACKAGES=(fortunes fortunes-min dict-gcide)
MIN_BYTES=$((20 * 1000 * 1000))

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "fetch-corpus: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=$(dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}")
if [ -f "$OUT/text/.complete" ] && [ "$(cat "$OUT/text/.complete")" = "$stamp" ]; then
  echo "$OUT/text"
  exit 0
fi

mkdir -p "$OUT"
exec 9>"$OUT/.fetch.lock"
flock 9
if [ -f "$OUT/text/.complete" ] && [ "$(cat "$OUT/text/.complete")" = "$stamp" ]; then
  echo "$OUT/text"
  exit 0
fi

tmp="$OUT/.text.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
for f in /usr/share/games/fortunes/*; do
  # Each fortune file comes with a .dat index (binary) and a .u8 symlink to itself.
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  case "$f" in *.dat) continue ;; esac
  iconv -c -f UTF-8 -t UTF-8 "$f" >"$tmp/fortunes-$(basename "$f").txt"
done
zcat /usr/share/dictd/gcide.dict.dz | iconv -c -f UTF-8 -t UTF-8 |
  split -C 2000000 -d -a 2 --additional-suffix=.txt - "$tmp/gcide-"

bytes=$(cat "$tmp"/*.txt | wc -c)
if ((bytes < MIN_BYTES)); then
  echo "fetch-corpus: only $bytes bytes of text assembled (expected at least $MIN_BYTES)" >&2
  exit 1
fi
{
  echo "Assembled by scripts/fetch-corpus.sh from Debian packages:"
  echo "$stamp"
  echo "fortunes: /usr/share/games/fortunes (see /usr/share/doc/fortunes/copyright)"
  echo "dict-gcide: GCIDE, GPL-3+ (see /usr/share/doc/dict-gcide/copyright)"
} >"$OUT/SOURCES"
echo "$stamp" >"$tmp/.complete"
rm -rf "$OUT/text"
mv "$tmp" "$OUT/text"
echo "fetch-corpus: $(ls "$OUT/text" | wc -l) files, $bytes bytes of text in $OUT/text" >&2
echo "$OUT/text"
