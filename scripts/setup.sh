#!/usr/bin/env bash
# Installs what libdsv4 needs on a Debian/Ubuntu machine (apt + pip), idempotently.
set -euo pipefail
# libcpp-httplib-dev: the OpenAI-compatible server (`dsv4 serve`); clang + libclang-rt-dev: the libFuzzer
# targets (scripts/fuzz.sh).
pkgs=(cmake g++ ninja-build pkg-config catch2 libfmt-dev nlohmann-json3-dev libpcre2-dev python3-dev python3-pip
      libcpp-httplib-dev clang libclang-rt-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
py_missing=()
# openai + prometheus_client: the server tests drive it with the official client and parse /metrics.
for m in numpy pytest pybind11 tokenizers openai prometheus_client; do
  python3 -c "import $m" 2>/dev/null || py_missing+=("$m")
done
if ((${#py_missing[@]})); then python3 -m pip install -q "${py_missing[@]}"; fi
