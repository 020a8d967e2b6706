#!/usr/bin/env bash
# Fetches, here, the build dependencies the GPU machine lacks (it has the PCRE2 runtime but not its
# headers, pkg-config file or link symlink) and unpacks them into third_party/sysroot, which
# tests/gpu/run-on-device.sh points pkg-config and CMake at. third_party/ is git-ignored; pass it to
# the device tool as carry=["third_party"]. Idempotent: re-running only refreshes the sysroot.
set -euo pipefail
cd "$(dirname "$0")/.."
root=third_party/sysroot
debs=third_party/debs
mkdir -p "$debs" "$root"
if ! ls "$debs"/libpcre2-dev_*.deb >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || true
  (cd "$debs" && apt-get download libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 \
     libpcre2-posix3)
fi
for f in "$debs"/*.deb; do dpkg -x "$f" "$root"; done
pc=$(find "$root" -name libpcre2-8.pc | head -n1)
[ -n "$pc" ] || { echo "carry-deps: libpcre2-8.pc not found under $root" >&2; exit 1; }
echo "carry-deps: sysroot ready ($(du -sh "$root" | cut -f1)); pkg-config file: $pc"
