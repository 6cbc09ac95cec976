#!/usr/bin/env bash
# Installs everything loco needs on Debian bookworm and builds it: the engine (libtorch, Gloo,
# OpenBLAS), the PyTorch oracle used by tests and benchmarks, the embedded dataset, npm packages,
# the native addon and the TypeScript. Safe to run again: installed pieces are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  libtorch-dev            # libtorch 1.13.1 (with oneDNN and c10d/Gloo)
  libgloo-dev             # Gloo headers for distributed training
  libopenblas0-openmp     # fast BLAS for linear layers (else reference BLAS, ~40x slower)
  python3-torch           # PyTorch 1.13.1: test oracle and benchmark baseline
  python3-torchvision     # torchvision 0.14: ResNet oracle
  libjemalloc2            # jemalloc: the tuned-allocator PyTorch baseline of bench:engine
  dataset-fashion-mnist   # the embedded default dataset
  chromium                # headless browser: the report test renders report.html
  g++ make python3        # node-gyp toolchain
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  [[ "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ -z "${LIBTORCH:-}" ] && [ ${#missing[@]} -gt 0 ]; then
  echo "loco setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
elif [ -n "${LIBTORCH:-}" ]; then
  echo "loco setup: building against LIBTORCH=$LIBTORCH (Debian's libtorch not required)"
fi

# npm install runs the package's install script, which builds the addon with node-gyp.
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=warn; else npm install --no-audit --no-fund --loglevel=warn; fi
npx tsc -p tsconfig.json
echo "loco setup: done"
