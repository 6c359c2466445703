#!/usr/bin/env bash
# Smoke run of every loadtest scenario against one real gateway node, for
# CI: a few dozen sockets for a few seconds each, asserting zero loss, so
# neither the tool nor the gateway's contract can rot unnoticed.
#
#   GATEWAY_BIN=target/debug/gateway loadtest/smoke.sh
#
# Environment: GATEWAY_BIN (required): started as `--listen 127.0.0.1:0`,
# it must print `gateway listening on <addr>`; LOADTEST_BIN (built with
# cargo when unset); SMOKE_SCENARIOS [fanout targeted chat idle churn
# deflate]. The node runs with permessage-deflate enabled; `deflate` is a
# fanout of 2 KB JSON messages with `--ws-deflate` that must receive
# compressed messages (the other scenarios' clients do not offer it).
# Bounded: each step has a timeout; the node is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${GATEWAY_BIN:?set GATEWAY_BIN to the gateway binary}"
SCENARIOS="${SMOKE_SCENARIOS:-fanout targeted chat idle churn deflate}"

if [[ -z "${LOADTEST_BIN:-}" ]]; then
  timeout 900 cargo build --quiet --manifest-path "$HERE/Cargo.toml" --bin loadtest
  target_dir="${CARGO_TARGET_DIR:-$(cd "$HERE" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}"
  LOADTEST_BIN="$target_dir/debug/loadtest"
fi

WORK="$(mktemp -d)"
LOG="$WORK/gateway.log"
GATEWAY_PID=""
cleanup() {
  if [[ -n "$GATEWAY_PID" ]]; then
    kill "$GATEWAY_PID" 2>/dev/null || true
    wait "$GATEWAY_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

GATEWAY_SERVER__COMPRESSION__ENABLED=true GATEWAY_ADMIN__LISTEN=127.0.0.1:0 "$GATEWAY_BIN" --listen 127.0.0.1:0 >"$LOG" 2>&1 &
GATEWAY_PID=$!
addr=""
for ((i = 0; i < 200; i++)); do
  addr="$(sed -n 's/.*gateway listening on \([0-9.]*:[0-9]*\).*/\1/p' "$LOG" | head -n1)"
  [[ -n "$addr" ]] && break
  if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
    echo "smoke: the gateway exited:" >&2
    cat "$LOG" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z "$addr" ]]; then
  echo "smoke: no 'gateway listening on' line within 20s:" >&2
  cat "$LOG" >&2
  exit 1
fi
# The address is printed once bound; wait (bounded) until it accepts too.
for ((i = 0; i < 100; i++)); do
  (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && break
  sleep 0.1
done
URL="http://$addr"
echo "smoke: gateway $URL (pid $GATEWAY_PID)"

common=(--nodes "$URL" --server-pids "$GATEWAY_PID" --polling-share 0.2 --assert-zero-loss --quiet)
passed=0
failed=0
for scenario in $SCENARIOS; do
  case "$scenario" in
    fanout) args=(fanout --subscribers 30 --rooms 3 --publishers 2 --rate 40 --duration 2) ;;
    targeted) args=(targeted --targets 20 --publishers 2 --rate 20 --duration 2) ;;
    chat) args=(chat --sockets 60 --publishers 3 --rate 30 --duration 2) ;;
    idle) args=(idle --connections 40 --hold 1 --settle 0.5) ;;
    churn) args=(churn --rate 20 --duration 2 --hold-ms 100 --settle 0.5) ;;
    deflate) args=(fanout --subscribers 30 --rooms 3 --publishers 2 --rate 40 --duration 2
      --ws-deflate --payload-kind json --payload-bytes 2048 --json) ;;
    *) echo "smoke: unknown scenario $scenario" >&2; exit 2 ;;
  esac
  echo "smoke: $scenario"
  if timeout 120 "$LOADTEST_BIN" "${args[@]}" "${common[@]}" >"$WORK/$scenario.out"; then
    ok=1
    cat "$WORK/$scenario.out"
    if [[ "$scenario" == deflate ]]; then
      # Every WebSocket receiver's 2 KB messages must have come compressed.
      compressed="$(sed -n 's/.*"compressed_messages":\([0-9]*\).*/\1/p' "$WORK/$scenario.out")"
      echo "smoke: deflate: ${compressed:-no} messages arrived compressed"
      [[ "${compressed:-0}" -gt 0 ]] || ok=0
    fi
  else
    ok=0
    cat "$WORK/$scenario.out"
  fi
  if ((ok)); then
    passed=$((passed + 1))
  else
    echo "smoke: $scenario FAILED" >&2
    failed=$((failed + 1))
  fi
done
if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
  echo "smoke: the gateway died during the run:" >&2
  tail -n 50 "$LOG" >&2
  failed=$((failed + 1))
fi
echo "smoke: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
