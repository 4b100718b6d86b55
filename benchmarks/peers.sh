#!/usr/bin/env bash
# Peers for the side-by-side benchmark (benchmarks/peers.py): WireMock 3.13 (the npm package
# carries the standalone jar; needs Java 17) and Prism (@stoplight/prism-cli), installed under
# benchmarks/.peers/ (git-ignored; never committed). Idempotent.
# Usage: bash benchmarks/peers.sh
set -euo pipefail
cd "$(dirname "$0")"
command -v java >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q openjdk-17-jre-headless; }
command -v npm >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q npm; }
command -v wrk >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q wrk; }
mkdir -p .peers
cd .peers
[ -f package.json ] || echo '{"name": "rmbg-emulator-bench-peers", "private": true}' > package.json
if [ ! -d node_modules/wiremock ] || [ ! -d node_modules/@stoplight/prism-cli ]; then
  npm install --no-audit --no-fund --loglevel=error wiremock@3.13.2 @stoplight/prism-cli@5
fi
find node_modules/wiremock -name 'wiremock-standalone*.jar' | head -1
ls node_modules/.bin/prism
