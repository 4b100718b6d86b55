#!/usr/bin/env bash
# HTTP benchmark: the emulator side by side with a bare Starlette app (see http_load.py).
# Usage: bash benchmarks/http.sh [--duration 20] [--connections 1,16,64] [--phases ...]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q wrk; }
exec python benchmarks/http_load.py "$@"
