#!/usr/bin/env bash
# Side-by-side benchmark: two nodes of each system over one Redis, the same
# scenarios against each, one table with ratios at the end.
#
#   loadtest/compare.sh                       # node, socketioxide, gateway
#   SYSTEMS="node socketioxide" loadtest/compare.sh
#   DURATION=10 IDLE_N=5000 loadtest/compare.sh   # quicker
#
# Systems run one after the other (never at once) on this machine,
# together with the load generator: compare ratios from one run, not
# absolute figures. Everything listens on 127.0.0.1; every step is bounded
# by `timeout`.
#
# After each gateway run the nodes' /metrics (ops listener on a free port)
# are saved under logs/ and the notes give WebSocket packets per write. The
# notes also give Redis's CPU time during each run (the servers' CPU in the
# table is the two nodes' only).
#
# Environment (defaults in brackets):
#   SYSTEMS [node socketioxide gateway]   RUNS [A B idle churn]
#   DURATION [20] seconds of publishing per fanout workload
#   SCHEDULE [poisson]: publishers' timing, `poisson` (independent) or `lockstep`
#   A: A_SUBS [2000] A_ROOMS [10] A_RATE [500]   B: B_SUBS [8000] B_ROOMS [1] B_RATE [25]
#   Across: A with every publisher on the first node and every subscriber on
#     the second (each delivery crosses Redis)
#   C2 (chat): C2_SOCKETS [18000] in rooms of C2_MIN..C2_MAX [2..8] members,
#     C2_RATE [1000] msg/s over all rooms, C2_PUBLISHERS [40] (each speaks in
#     every 40th room). 18000, not 20000: the load generator holds every
#     socket in one process, and a process may open 20000 files here.
#   PUBLISHERS [4] PAYLOAD_BYTES [100]  THREADS [2] loadtest worker threads
#   PAYLOAD_KIND [padding]: `padding` (the stamp padded with x) or `json`
#     (a JSON document of about PAYLOAD_BYTES, as applications send)
#   COMPRESSION [0]: 1 turns WebSocket permessage-deflate on in every
#     system that has it (gateway: GATEWAY_SERVER__COMPRESSION__ENABLED,
#     threshold 1024 bytes, level 6 (its default); Node: COMPRESSION=1, threshold 1024,
#     zlib level 6; socketioxide cannot compress and runs without) and the
#     load generator's clients offer it (--ws-deflate). The compression
#     benchmark (both modes, one table) is compare-compression.sh.
#   IDLE_N [15000] IDLE_HOLD [10]   CHURN_RATE [100] CHURN_DURATION [10]
#   OUT [loadtest/results/<time>]   REDIS_SERVER [redis-server]
#   QUIET_WAIT [0]: before each run, wait up to this many seconds for
#     other (niced) work on the machine to drop below QUIET_NICE_CORES [0.2]
#   LOADTEST_BIN, SIOXIDE_BIN (built here when unset, into CARGO_TARGET_DIR
#   or each crate's own target folder), GATEWAY_BIN
#   [<repo>/target/release/gateway], GATEWAY_EXTRA_ARGS (more gateway flags)
#   socketioxide-nodelay: the socketioxide baseline with TCP_NODELAY on its
#     connections (NODELAY=1), as the gateway and Node set it; plain
#     `socketioxide` keeps axum's default (Nagle on)
#   A second gateway build in the same run (before/after a change): add
#   `gateway-<label>` to SYSTEMS and give its binary in GATEWAY_BIN_<label>,
#   e.g. SYSTEMS="socketioxide gateway gateway-base" GATEWAY_BIN_base=/tmp/gw
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

SYSTEMS="${SYSTEMS:-node socketioxide gateway}"
RUNS="${RUNS:-A B idle churn}"
DURATION="${DURATION:-20}"
A_SUBS="${A_SUBS:-2000}" A_ROOMS="${A_ROOMS:-10}" A_RATE="${A_RATE:-500}"
B_SUBS="${B_SUBS:-8000}" B_ROOMS="${B_ROOMS:-1}" B_RATE="${B_RATE:-25}"
C2_SOCKETS="${C2_SOCKETS:-18000}" C2_MIN="${C2_MIN:-2}" C2_MAX="${C2_MAX:-8}"
C2_RATE="${C2_RATE:-1000}" C2_PUBLISHERS="${C2_PUBLISHERS:-40}"
SCHEDULE="${SCHEDULE:-poisson}"
PUBLISHERS="${PUBLISHERS:-4}" PAYLOAD_BYTES="${PAYLOAD_BYTES:-100}" THREADS="${THREADS:-2}"
PAYLOAD_KIND="${PAYLOAD_KIND:-padding}" COMPRESSION="${COMPRESSION:-0}"
IDLE_N="${IDLE_N:-15000}" IDLE_HOLD="${IDLE_HOLD:-10}"
CHURN_RATE="${CHURN_RATE:-100}" CHURN_DURATION="${CHURN_DURATION:-10}"
OUT="${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
GATEWAY_BIN="${GATEWAY_BIN:-$ROOT/target/release/gateway}"
QUIET_WAIT="${QUIET_WAIT:-0}" QUIET_NICE_CORES="${QUIET_NICE_CORES:-0.2}"
# Bound on one loadtest run beyond its own nominal length.
RUN_SLACK=240

mkdir -p "$OUT/logs"
NOTES="$OUT/notes.txt"
: >"$NOTES"
note() { echo "compare: $*" | tee -a "$NOTES" >&2; }
say() { echo "compare: $*" >&2; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT INT TERM

# --- binaries ---------------------------------------------------------------
# cargo's target folder for a manifest (CARGO_TARGET_DIR wins when set).
target_dir() {
  if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    echo "$CARGO_TARGET_DIR"
  else
    cargo metadata --format-version 1 --no-deps --manifest-path "$1" |
      sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
  fi
}
build() { # manifest binary-name
  say "building $2 (release)"
  nice -n 10 cargo build --release --quiet --manifest-path "$1"
}
if [[ -z "${LOADTEST_BIN:-}" ]]; then
  build "$HERE/Cargo.toml" loadtest
  LOADTEST_BIN="$(target_dir "$HERE/Cargo.toml")/release/loadtest"
fi
# The binary of a gateway system: `gateway` is GATEWAY_BIN, `gateway-<label>`
# is GATEWAY_BIN_<label>.
gateway_bin() {
  if [[ "$1" == gateway ]]; then
    echo "$GATEWAY_BIN"
  else
    local var="GATEWAY_BIN_${1#gateway-}"
    echo "${!var:-}"
  fi
}

for s in $SYSTEMS; do
  case "$s" in
    socketioxide | socketioxide-nodelay)
      if [[ -z "${SIOXIDE_BIN:-}" ]]; then
        build "$HERE/baselines/socketioxide/Cargo.toml" socketioxide-baseline
        SIOXIDE_BIN="$(target_dir "$HERE/baselines/socketioxide/Cargo.toml")/release/loadtest-baseline-socketioxide"
      fi ;;
    node)
      if [[ ! -d "$HERE/baselines/node/node_modules" ]]; then
        say "installing the Node baseline (npm ci)"
        (cd "$HERE/baselines/node" && timeout 300 npm ci --no-audit --no-fund --loglevel=error)
      fi ;;
    gateway | gateway-*)
      bin="$(gateway_bin "$s")"
      if [[ ! -x "$bin" ]]; then
        note "$s: ${bin:-its binary (GATEWAY_BIN_${s#gateway-})} not found (cargo build --release -p gateway); skipped"
        SYSTEMS="$(echo " $SYSTEMS " | sed "s/ $s / /")"
      fi ;;
    *) echo "compare: unknown system $s" >&2; exit 2 ;;
  esac
done

# --- ports and processes -----------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
USED_PORTS=" "
free_port() {
  local p tries=0
  while ((tries++ < 200)); do
    # Below the kernel's ephemeral range (32768+), so no client socket holds it.
    p=$((20000 + RANDOM % 12000))
    if [[ "$USED_PORTS" != *" $p "* ]] && ! port_open "$p"; then
      USED_PORTS+="$p "
      echo "$p"
      return 0
    fi
  done
  echo "compare: no free port" >&2
  return 1
}
wait_port() { # port pid
  local i
  for ((i = 0; i < 150; i++)); do
    port_open "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

if [[ "$COMPRESSION" == 1 && " $SYSTEMS " == *" socketioxide "* ]]; then
  note "socketioxide: no permessage-deflate (socketioxide issue #761); it runs uncompressed"
fi

REDIS_PORT="$(free_port)"
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  >"$OUT/logs/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT" "$REDIS_PID" || { echo "compare: redis-server did not start" >&2; exit 1; }
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
say "redis on $REDIS_URL, results in $OUT"

# Starts node $2 of system $1 (three tries); sets NODE_URL and NODE_PID.
start_node() {
  local try
  for try in 1 2 3; do
    start_node_once "$@" && return 0
    kill "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  done
  return 1
}
start_node_once() {
  local system="$1" i="$2" port log="$OUT/logs/$1-$2.log"
  case "$system" in
    node)
      port="$(free_port)"
      PORT="$port" REDIS_URL="$REDIS_URL" COMPRESSION="$COMPRESSION" \
        node "$HERE/baselines/node/server.js" >"$log" 2>&1 &
      NODE_PID=$! ;;
    socketioxide | socketioxide-nodelay)
      port="$(free_port)"
      PORT="$port" REDIS_URL="$REDIS_URL" NODELAY="$([[ "$system" == *-nodelay ]] && echo 1 || echo 0)" \
        "$SIOXIDE_BIN" >"$log" 2>&1 &
      NODE_PID=$! ;;
    gateway | gateway-*)
      # shellcheck disable=SC2086
      GATEWAY_CLUSTER__REDIS_URL="$REDIS_URL" GATEWAY_LIMITS__RATE_LIMIT_PER_SEC=0 \
        GATEWAY_OPS__LISTEN="${GATEWAY_OPS__LISTEN:-127.0.0.1:0}" \
        GATEWAY_ADMIN__LISTEN="${GATEWAY_ADMIN__LISTEN:-127.0.0.1:0}" \
        GATEWAY_SERVER__COMPRESSION__ENABLED="$([[ "$COMPRESSION" == 1 ]] && echo true || echo false)" \
        "$(gateway_bin "$system")" --listen 127.0.0.1:0 ${GATEWAY_EXTRA_ARGS:-} >"$log" 2>&1 &
      NODE_PID=$!
      local k addr=""
      for ((k = 0; k < 150; k++)); do
        addr="$(sed -n 's/.*gateway listening on \([0-9.:]*\).*/\1/p' "$log" | head -n1)"
        [[ -n "$addr" ]] && break
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.1
      done
      [[ -n "$addr" ]] || { echo "compare: gateway node $i did not start (see $log)" >&2; return 1; }
      port="${addr##*:}" ;;
  esac
  PIDS+=("$NODE_PID")
  wait_port "$port" "$NODE_PID" || { echo "compare: $system node $i did not start (see $log)" >&2; return 1; }
  NODE_URL="http://127.0.0.1:$port"
}

# Niced CPU time (other people's builds, on a shared machine) in cores,
# averaged over 5 seconds.
nice_cores() {
  local a b
  a="$(awk '/^cpu /{print $3}' /proc/stat)"
  sleep 5
  b="$(awk '/^cpu /{print $3}' /proc/stat)"
  awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b - a) / 100 / 5 }'
}
wait_quiet() { # system
  local waited=0 cores
  ((QUIET_WAIT > 0)) || return 0
  while :; do
    cores="$(nice_cores)"
    awk -v c="$cores" -v t="$QUIET_NICE_CORES" 'BEGIN { exit !(c <= t) }' && return 0
    waited=$((waited + 5))
    if ((waited >= QUIET_WAIT)); then
      note "$1: other work kept $cores cores busy after ${QUIET_WAIT}s of waiting; ran anyway"
      return 0
    fi
  done
}

# loadtest <system> <run> <bound seconds> <args...>: JSON report to $OUT.
loadtest() {
  local system="$1" run="$2" bound="$3"
  shift 3
  say "$system: $run"
  if ! timeout "$bound" "$LOADTEST_BIN" "$@" --json --threads "$THREADS" \
    >"$OUT/$system-$run.json" 2>"$OUT/logs/$system-$run.err"; then
    note "$system: run $run failed or timed out (see logs/$system-$run.err)"
  fi
  tail -n 1 "$OUT/logs/$system-$run.err" >&2 || true
}

# Each run gets two fresh nodes, so no run inherits another's memory or warmth.
start_pair() { # system
  pid1="" pid2=""
  start_node "$1" 1 || return 1
  url1="$NODE_URL" pid1="$NODE_PID"
  start_node "$1" 2 || return 1
  url2="$NODE_URL" pid2="$NODE_PID"
  nodes="$url1,$url2"
  pids="$pid1,$pid2"
}
stop_pair() {
  cleanup_nodes
}
# Stops every process started here except Redis.
cleanup_nodes() {
  local pid
  for pid in "${PIDS[@]}"; do
    [[ "$pid" == "$REDIS_PID" ]] || kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    [[ "$pid" == "$REDIS_PID" ]] || wait "$pid" 2>/dev/null || true
  done
  PIDS=("$REDIS_PID")
}

# Redis's CPU time so far (user + system), in clock ticks.
redis_ticks() { awk '{ print $14 + $15 }' "/proc/$REDIS_PID/stat"; }
TICKS_PER_S="$(getconf CLK_TCK)"

# The gateway nodes' /metrics after a run (packets sent per write shows how
# much the writer shards coalesced): logs/gateway-<run>-metrics-<n>.txt and a
# line in the notes.
scrape_gateway() { # system run
  local n addr files=() system="$1"
  shift
  for n in 1 2; do
    addr="$(sed -n 's/.*gateway ops listening on \([0-9.:]*\).*/\1/p' "$OUT/logs/$system-$n.log" | head -n1)"
    [[ -n "$addr" ]] || continue
    curl -s --max-time 5 "http://$addr/metrics" >"$OUT/logs/$system-$1-metrics-$n.txt" &&
      files+=("$OUT/logs/$system-$1-metrics-$n.txt")
  done
  ((${#files[@]} > 0)) || return 0
  awk -v run="$1" -v sys="$system" '
    /^gateway_packets_sent_total\{transport="websocket"\}/ { p += $2 }
    /^gateway_writes_total\{transport="websocket"\}/ { w += $2 }
    /^gateway_ws_compressed_frames_total/ { cf += $2 }
    /^gateway_ws_compression_input_bytes_total/ { ci += $2 }
    /^gateway_ws_compression_output_bytes_total/ { co += $2 }
    END {
      if (w > 0) printf "%s %s: %d WebSocket packets in %d writes (%.2f per write)\n", sys, run, p, w, p / w
      if (cf > 0 && co > 0) printf "%s %s: %d messages sent compressed, %.2fx smaller (%d bytes in, %d out)\n", sys, run, cf, ci / co, ci, co
    }
  ' "${files[@]}" | while read -r line; do note "$line"; done
}

for system in $SYSTEMS; do
  if ! start_pair "$system"; then
    note "$system: could not start two nodes; skipped"
    stop_pair
    continue
  fi
  say "$system: nodes $nodes (pids $pids)"
  # Do the two nodes share rooms? A tiny cross-node fanout tells.
  if ! timeout 60 "$LOADTEST_BIN" fanout --nodes "$nodes" --subscribers 4 --rooms 1 \
    --publishers 2 --rate 20 --duration 1 --quiet --assert-zero-loss --json \
    >"$OUT/$system-probe.json" 2>"$OUT/logs/$system-probe.err"; then
    note "$system: its two nodes do not share rooms (no working Redis support?): cross-node deliveries are lost, figures are not comparable"
  fi
  stop_pair

  for run in $RUNS; do
    wait_quiet "$system $run"
    if ! start_pair "$system"; then
      note "$system: could not start two nodes for run $run; skipped"
      stop_pair
      continue
    fi
    common=(--nodes "$nodes" --server-pids "$pids")
    if [[ "$COMPRESSION" == 1 ]]; then common+=(--ws-deflate); fi
    payload=(--payload-bytes "$PAYLOAD_BYTES" --payload-kind "$PAYLOAD_KIND")
    redis_before="$(redis_ticks)"
    case "$run" in
      A) loadtest "$system" A $((DURATION + RUN_SLACK)) fanout "${common[@]}" --schedule "$SCHEDULE" \
           --subscribers "$A_SUBS" --rooms "$A_ROOMS" --rate "$A_RATE" --duration "$DURATION" \
           --publishers "$PUBLISHERS" "${payload[@]}" ;;
      B) loadtest "$system" B $((DURATION + RUN_SLACK)) fanout "${common[@]}" --schedule "$SCHEDULE" \
           --subscribers "$B_SUBS" --rooms "$B_ROOMS" --rate "$B_RATE" --duration "$DURATION" \
           --publishers "$PUBLISHERS" "${payload[@]}" ;;
      Across) loadtest "$system" Across $((DURATION + RUN_SLACK)) fanout "${common[@]}" --schedule "$SCHEDULE" \
           --subscribers "$A_SUBS" --rooms "$A_ROOMS" --rate "$A_RATE" --duration "$DURATION" \
           --publishers "$PUBLISHERS" "${payload[@]}" --placement cross ;;
      C2) loadtest "$system" C2 $((DURATION + RUN_SLACK)) chat "${common[@]}" --schedule "$SCHEDULE" \
           --sockets "$C2_SOCKETS" --min-members "$C2_MIN" --max-members "$C2_MAX" \
           --rate "$C2_RATE" --duration "$DURATION" \
           --publishers "$C2_PUBLISHERS" "${payload[@]}" ;;
      idle) loadtest "$system" idle $((IDLE_HOLD + RUN_SLACK)) idle "${common[@]}" \
           --connections "$IDLE_N" --hold "$IDLE_HOLD" ;;
      churn) loadtest "$system" churn $((CHURN_DURATION + RUN_SLACK)) churn "${common[@]}" \
           --rate "$CHURN_RATE" --duration "$CHURN_DURATION" ;;
      *) echo "compare: unknown run $run" >&2; exit 2 ;;
    esac
    note "$system $run: Redis CPU $(awk -v t="$(($(redis_ticks) - redis_before))" -v hz="$TICKS_PER_S" 'BEGIN { printf "%.2f", t / hz }') s during the run (setup included)"
    [[ "$system" == gateway* ]] && scrape_gateway "$system" "$run"
    stop_pair
  done
done

{
  echo "## Results ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, loadtest and servers on one machine)"
  echo
  echo "Two nodes per system over one Redis ($("$REDIS_SERVER" --version | awk '{print $3}')); A: $A_SUBS subscribers, $A_ROOMS rooms, $A_RATE msg/s;"
  echo "B: $B_SUBS subscribers, $B_ROOMS room(s), $B_RATE msg/s; ${DURATION}s each, $PUBLISHERS publishers, ${PAYLOAD_BYTES}-byte payloads ($PAYLOAD_KIND);"
  echo "WebSocket compression: $([[ "$COMPRESSION" == 1 ]] && echo "on (permessage-deflate; clients with --ws-deflate)" || echo off);"
  echo "idle: $IDLE_N sockets held ${IDLE_HOLD}s; churn: $CHURN_RATE connections/s for ${CHURN_DURATION}s. Ratios: > 1 is better than socketioxide."
  echo
  "$LOADTEST_BIN" table --dir "$OUT" --systems "$(echo $SYSTEMS | tr ' ' ',')" --baseline socketioxide
  if [[ -s "$NOTES" ]]; then
    echo
    sed 's/^compare: /- /' "$NOTES"
  fi
} | tee "$OUT/table.md"
