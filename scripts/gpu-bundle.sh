#!/usr/bin/env bash
# Prepares .gpu-bundle/ (git-ignored) with what the GPU machine's image lacks for building
# moeopt with CUDA: runs the shared bundle script (cpp-httplib, PCRE2, utf8proc, CUTLASS
# headers) and adds zlib's development files (headers + libz.so link), which moeopt_core
# needs for gzip-compressed data files. Run here, then carry .gpu-bundle with the device call
# and `source .gpu-bundle/env.sh` there (scripts/gpu-check.sh does).
# Usage: scripts/gpu-bundle.sh [OUTDIR]     (default: .gpu-bundle in the repository root)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(realpath -m "${1:-$root/.gpu-bundle}")
shared=${MOEOPT_SHARED_BUNDLE:-$root/../shared/scripts/gpu-bundle.sh}
if [ ! -x "$shared" ] && [ ! -f "$shared" ]; then
  echo "gpu-bundle: shared bundle script not found at $shared (set MOEOPT_SHARED_BUNDLE)" >&2
  exit 2
fi
bash "$shared" "$out"
extra=(zlib1g-dev)
mkdir -p "$out/debs-extra"
if ! ls "$out"/debs-extra/zlib1g-dev_*.deb >/dev/null 2>&1; then
  [ -n "$(ls /var/lib/apt/lists 2>/dev/null | head -1)" ] || apt-get update -qq
  (cd "$out/debs-extra" && apt-get download -qq "${extra[@]}")
fi
for d in "$out"/debs-extra/zlib1g-dev_*.deb; do dpkg -x "$d" "$out/root"; done
# Link against the image's own runtime libz.so.1 (every Ubuntu image has it) rather than
# shipping Debian's: env.sh puts the bundle on LD_LIBRARY_PATH, and an older libz there would
# be picked up by every process, PyTorch included.
rm -f "$out"/debs-extra/zlib1g_*.deb "$out"/root/usr/lib/x86_64-linux-gnu/libz.so.1*
ln -sf /usr/lib/x86_64-linux-gnu/libz.so.1 "$out/root/usr/lib/x86_64-linux-gnu/libz.so"
# Debian's zlib.pc also names /usr.
find "$out/root" -name 'zlib.pc' -exec sed -i "s|^prefix=/usr$|prefix=$out/root/usr|" {} +
du -sh "$out" | cut -f1 | sed 's/^/bundle size with zlib: /'
