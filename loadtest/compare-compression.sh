#!/usr/bin/env bash
# The compression benchmark (issue 17): the gateway and Node Socket.IO, each
# without and with WebSocket permessage-deflate, workloads A and B of
# compare.sh with 2 KB JSON payloads. One table: wire bytes per delivery and
# deliveries per server CPU-second, then the issue's three goals.
#
#   GATEWAY_BIN=target/release/gateway loadtest/compare-compression.sh
#   DURATION=5 A_SUBS=200 B_SUBS=400 loadtest/compare-compression.sh   # a quick look
#
# It runs compare.sh twice (COMPRESSION=0, then 1) with SYSTEMS [node
# gateway], RUNS [A B], PAYLOAD_KIND=json, PAYLOAD_BYTES [2048]; every other
# knob of compare.sh (DURATION, A_SUBS, QUIET_WAIT, GATEWAY_BIN, ...) passes
# through. Results: OUT [loadtest/results/compression-<time>], with plain/
# and deflate/ holding each pass's reports and logs, and table.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-$HERE/results/compression-$(date +%Y%m%d-%H%M%S)}"
SYSTEMS="${SYSTEMS:-node gateway}"
RUNS="${RUNS:-A B}"
export RUNS PAYLOAD_KIND=json PAYLOAD_BYTES="${PAYLOAD_BYTES:-2048}" SYSTEMS
# Two gateway nodes on one machine: the admin API on a free port each.
export GATEWAY_ADMIN__LISTEN="${GATEWAY_ADMIN__LISTEN:-127.0.0.1:0}"
mkdir -p "$OUT"

COMPRESSION=0 OUT="$OUT/plain" "$HERE/compare.sh"
# The first pass built the load generator; the second reuses it.
if [[ -z "${LOADTEST_BIN:-}" ]]; then
  target="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps \
    --manifest-path "$HERE/Cargo.toml" | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}"
  export LOADTEST_BIN="$target/release/loadtest"
fi
COMPRESSION=1 OUT="$OUT/deflate" "$HERE/compare.sh"

# One folder for `loadtest table`: <system>-<run>.json (plain) and
# <system>-deflate-<run>.json (compressed).
columns=()
for s in $SYSTEMS; do
  for run in $RUNS; do
    [[ -f "$OUT/plain/$s-$run.json" ]] && cp "$OUT/plain/$s-$run.json" "$OUT/$s-$run.json"
    [[ -f "$OUT/deflate/$s-$run.json" ]] && cp "$OUT/deflate/$s-$run.json" "$OUT/$s-deflate-$run.json"
  done
  columns+=("$s" "$s-deflate")
done

# A figure of a saved report (one JSON object on one line).
figure() { # file key
  [[ -f "$1" ]] || return 0
  sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1" | head -n1
}
ratio() { # a b: a / b, or "-"
  awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'
}

{
  echo "## Compression benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, loadtest and servers on one machine)"
  echo
  echo "compare.sh workloads $RUNS, ${PAYLOAD_BYTES}-byte JSON payloads (\`--payload-kind json\`), two nodes per system over Redis;"
  echo "\`-deflate\`: the servers with permessage-deflate on and the clients offering it (\`--ws-deflate\`)."
  echo "Ratios against gateway-deflate (> 1: better than it)."
  echo
  "$LOADTEST_BIN" table --dir "$OUT" --systems "$(IFS=,; echo "${columns[*]}")" --baseline gateway-deflate
  echo
  echo "Goals of issue 17 (per run):"
  echo
  echo "| run | wire bytes: gateway plain / gateway deflate (goal >= 3) | CPU per delivery: gateway deflate / gateway plain (goal <= 1.2) | deliveries per CPU-second: gateway deflate / Node deflate (goal >= 5) |"
  echo "|---|---:|---:|---:|"
  for run in $RUNS; do
    gp="$OUT/gateway-$run.json" gd="$OUT/gateway-deflate-$run.json" nd="$OUT/node-deflate-$run.json"
    echo "| $run | $(ratio "$(figure "$gp" wire_bytes_per_delivery)" "$(figure "$gd" wire_bytes_per_delivery)") |" \
      "$(ratio "$(figure "$gp" deliveries_per_cpu_sec)" "$(figure "$gd" deliveries_per_cpu_sec)") |" \
      "$(ratio "$(figure "$gd" deliveries_per_cpu_sec)" "$(figure "$nd" deliveries_per_cpu_sec)") |"
  done
  for pass in plain deflate; do
    if [[ -s "$OUT/$pass/notes.txt" ]]; then
      echo
      echo "Notes ($pass):"
      sed 's/^compare: /- /' "$OUT/$pass/notes.txt"
    fi
  done
} | tee "$OUT/table.md"
