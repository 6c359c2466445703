#!/usr/bin/env bash
# Where a gateway node's CPU goes per delivery: gateway nodes (two unless
# NODE_COUNT says otherwise) over one Redis, one workload of compare.sh, and
# while it publishes
#   - each node's user and kernel CPU time (/proc/<pid>/stat),
#   - each node's system calls by kind (perf's raw_syscalls tracepoint),
#   - WebSocket packets, bytes and writes (the nodes' /metrics),
#   - a sampled profile of node 1 (perf record -e cpu-clock -g),
#   - Redis's CPU time.
# The summary divides each by the deliveries (and Redis's by the messages
# published) that the load generator counted meanwhile.
#
#   loadtest/profile.sh A                  # or B, C2, Across
#   GATEWAY_BIN=/tmp/other/gateway loadtest/profile.sh C2
#   SYSTEM=socketioxide loadtest/profile.sh C2   # the baseline, measured alike
#
# The profile also splits node 1's CPU by where it is spent: inside each
# kind of system call (kernel time under its entry point, the loopback
# receiver's TCP path included), in the scheduler's switch and wake-up
# paths, and everything else (user space, interrupts).
#
# Environment (defaults in brackets): SYSTEM [gateway] or socketioxide
# (SIOXIDE_BIN [built here]; its nodes have no /metrics, so no WebSocket
# write counts), NODE_COUNT [2], GATEWAY_BIN [<repo>/target/release/gateway],
# LOADTEST_BIN [built here], DURATION [20] seconds of publishing, PERF_SECONDS
# [10] of it sampled (starting 5 s in), GATEWAY_EXTRA_ARGS, OUT
# [loadtest/results/profile-<run>-<time>], REDIS_SERVER [redis-server], and
# the workload sizes of compare.sh (A_SUBS, A_ROOMS, A_RATE, B_*, C2_*,
# PUBLISHERS, PAYLOAD_BYTES, SCHEDULE). Everything listens on 127.0.0.1 and
# every step is bounded by `timeout`. Needs `perf` (Debian: linux-perf) and
# root or kernel.perf_event_paranoid <= 1 for the syscall counts; without it
# the CPU and metrics figures are still given.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
RUN="${1:-A}"
DURATION="${DURATION:-20}" PERF_SECONDS="${PERF_SECONDS:-10}"
A_SUBS="${A_SUBS:-2000}" A_ROOMS="${A_ROOMS:-10}" A_RATE="${A_RATE:-500}"
B_SUBS="${B_SUBS:-8000}" B_ROOMS="${B_ROOMS:-1}" B_RATE="${B_RATE:-25}"
C2_SOCKETS="${C2_SOCKETS:-18000}" C2_MIN="${C2_MIN:-2}" C2_MAX="${C2_MAX:-8}"
C2_RATE="${C2_RATE:-1000}" C2_PUBLISHERS="${C2_PUBLISHERS:-40}"
PUBLISHERS="${PUBLISHERS:-4}" PAYLOAD_BYTES="${PAYLOAD_BYTES:-100}"
SCHEDULE="${SCHEDULE:-poisson}" NODE_COUNT="${NODE_COUNT:-2}"
GATEWAY_BIN="${GATEWAY_BIN:-$ROOT/target/release/gateway}" SYSTEM="${SYSTEM:-gateway}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
OUT="${OUT:-$HERE/results/profile-$RUN-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

if [[ -z "${LOADTEST_BIN:-}" ]]; then
  nice -n 10 cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
  LOADTEST_BIN="$(cargo metadata --format-version 1 --no-deps --manifest-path "$HERE/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/loadtest"
fi
case "$SYSTEM" in
  gateway) SERVER_BIN="$GATEWAY_BIN" ;;
  socketioxide)
    if [[ -z "${SIOXIDE_BIN:-}" ]]; then
      nice -n 10 cargo build --release --quiet --manifest-path "$HERE/baselines/socketioxide/Cargo.toml"
      SIOXIDE_BIN="$(cargo metadata --format-version 1 --no-deps --manifest-path "$HERE/baselines/socketioxide/Cargo.toml" |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/loadtest-baseline-socketioxide"
    fi
    SERVER_BIN="$SIOXIDE_BIN" ;;
  *) echo "profile: unknown SYSTEM $SYSTEM (gateway, socketioxide)" >&2; exit 2 ;;
esac
[[ -x "$SERVER_BIN" ]] || { echo "profile: $SERVER_BIN not found" >&2; exit 2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    port_open "$p" || { echo "$p"; return 0; }
  done
  return 1
}

REDIS_PORT="$(free_port)"
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 50); do port_open "$REDIS_PORT" && break; sleep 0.1; done

nodes=() pids=() ops=()
start_gateway() { # n
  local log="$OUT/gateway-$1.log" pid addr="" op=""
  # shellcheck disable=SC2086
  GATEWAY_CLUSTER__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" GATEWAY_LIMITS__RATE_LIMIT_PER_SEC=0 \
    GATEWAY_OPS__LISTEN=127.0.0.1:0 GATEWAY_ADMIN__LISTEN=127.0.0.1:0 \
    "$GATEWAY_BIN" --listen 127.0.0.1:0 ${GATEWAY_EXTRA_ARGS:-} >"$log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 150); do
    addr="$(sed -n 's/.*gateway listening on \([0-9.:]*\).*/\1/p' "$log" | head -n1)"
    op="$(sed -n 's/.*gateway ops listening on \([0-9.:]*\).*/\1/p' "$log" | head -n1)"
    [[ -n "$addr" && -n "$op" ]] && break
    sleep 0.1
  done
  [[ -n "$addr" ]] || { echo "profile: gateway node $1 did not start (see $log)" >&2; exit 1; }
  nodes+=("http://$addr") pids+=("$pid") ops+=("$op")
}
start_socketioxide() { # n
  local log="$OUT/socketioxide-$1.log" pid port
  port="$(free_port)"
  PORT="$port" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" "$SIOXIDE_BIN" >"$log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 150); do port_open "$port" && break; sleep 0.1; done
  port_open "$port" || { echo "profile: socketioxide node $1 did not start (see $log)" >&2; exit 1; }
  nodes+=("http://127.0.0.1:$port") pids+=("$pid") ops+=("")
}
for n in $(seq "$NODE_COUNT"); do "start_$SYSTEM" "$n"; done
NODES="$(IFS=,; echo "${nodes[*]}")" SERVER_PIDS="$(IFS=,; echo "${pids[*]}")"

common=(--nodes "$NODES" --server-pids "$SERVER_PIDS" --schedule "$SCHEDULE" --duration "$DURATION"
  --payload-bytes "$PAYLOAD_BYTES" --json)
case "$RUN" in
  A) args=(fanout --subscribers "$A_SUBS" --rooms "$A_ROOMS" --rate "$A_RATE" --publishers "$PUBLISHERS") ;;
  Across) args=(fanout --subscribers "$A_SUBS" --rooms "$A_ROOMS" --rate "$A_RATE" --publishers "$PUBLISHERS"
    --placement cross) ;;
  B) args=(fanout --subscribers "$B_SUBS" --rooms "$B_ROOMS" --rate "$B_RATE" --publishers "$PUBLISHERS") ;;
  C2) args=(chat --sockets "$C2_SOCKETS" --min-members "$C2_MIN" --max-members "$C2_MAX"
    --rate "$C2_RATE" --publishers "$C2_PUBLISHERS") ;;
  *) echo "profile: unknown run $RUN (A, Across, B, C2)" >&2; exit 2 ;;
esac

# CPU ticks (user, system) of a process.
ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
metric() { # file name: the websocket series' value
  awk -v n="$2" '$1 == n "{transport=\"websocket\"}" { print $2 }' "$1"
}

# The nodes' metrics and CPU ticks, Redis's ticks, and the load
# generator's counts so far, as <what>-$1 files.
snapshot() { # before|after
  local n
  for n in $(seq "$NODE_COUNT"); do
    if [[ -n "${ops[$((n - 1))]}" ]]; then
      curl -s --max-time 5 "http://${ops[$((n - 1))]}/metrics" >"$OUT/metrics-$1-$n.txt"
    else
      : >"$OUT/metrics-$1-$n.txt"
    fi
    ticks "${pids[$((n - 1))]}" >"$OUT/ticks-$1-$n.txt"
  done
  ticks "$REDIS_PID" >"$OUT/ticks-$1-redis.txt"
  for what in delivered published; do
    sed -n "s/.*$what \\([0-9]*\\).*/\\1/p" "$OUT/loadtest.err" | tail -n1 >"$OUT/$what-$1.txt"
  done
}

timeout $((DURATION + 300)) "$LOADTEST_BIN" "${args[@]}" "${common[@]}" \
  >"$OUT/loadtest.json" 2>"$OUT/loadtest.err" &
LOADTEST_PID=$!
# Wait until publishing starts (the load generator says so on stderr).
for _ in $(seq 3000); do
  grep -q "publish" "$OUT/loadtest.err" 2>/dev/null && break
  kill -0 "$LOADTEST_PID" 2>/dev/null || break
  sleep 0.1
done
sleep 5
snapshot before
SYSCALLS=""
if command -v perf >/dev/null; then
  timeout $((PERF_SECONDS + 30)) perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_futex \
    -p "$SERVER_PIDS" -o "$OUT/syscalls.txt" -- sleep "$PERF_SECONDS" 2>/dev/null &
  SYSCALLS=$!
  timeout $((PERF_SECONDS + 30)) perf record -e cpu-clock -F 2000 -g -p "${pids[0]}" -o "$OUT/perf.data" \
    -- sleep "$PERF_SECONDS" >/dev/null 2>&1 || true
  wait "$SYSCALLS" || true
else
  sleep "$PERF_SECONDS"
fi
snapshot after
wait "$LOADTEST_PID" || echo "profile: the load generator failed (see $OUT/loadtest.err)" >&2

HZ="$(getconf CLK_TCK)"
deliveries=$(($(cat "$OUT/delivered-after.txt") - $(cat "$OUT/delivered-before.txt")))
published=$(($(cat "$OUT/published-after.txt") - $(cat "$OUT/published-before.txt")))
read -r ru0 rs0 <"$OUT/ticks-before-redis.txt"
read -r ru1 rs1 <"$OUT/ticks-after-redis.txt"
redis=$((ru1 - ru0 + rs1 - rs0))
user=0 sys=0 packets=0 bytes=0 writes=0
for n in $(seq "$NODE_COUNT"); do
  read -r u0 s0 <"$OUT/ticks-before-$n.txt"
  read -r u1 s1 <"$OUT/ticks-after-$n.txt"
  user=$((user + u1 - u0)) sys=$((sys + s1 - s0))
  for m in packets_sent_total bytes_sent_total writes_total; do
    b="$(metric "$OUT/metrics-before-$n.txt" "gateway_$m")" a="$(metric "$OUT/metrics-after-$n.txt" "gateway_$m")"
    d="$(awk -v a="${a:-0}" -v b="${b:-0}" 'BEGIN { printf "%d", a - b }')"
    case "$m" in
      packets_sent_total) packets=$((packets + d)) ;;
      bytes_sent_total) bytes=$((bytes + d)) ;;
      writes_total) writes=$((writes + d)) ;;
    esac
  done
done
{
  echo "## Profile of $RUN ($(date -u +%Y-%m-%dT%H:%MZ), $SYSTEM: $SERVER_BIN)"
  echo
  echo "$NODE_COUNT nodes over ${PERF_SECONDS}s of publishing ($published messages published, $deliveries deliveries, as counted by the load generator):"
  echo
  awk -v d="$deliveries" -v m="$published" -v r="$redis" -v u="$user" -v s="$sys" -v hz="$HZ" -v p="$packets" -v b="$bytes" -v w="$writes" 'BEGIN {
    if (d <= 0) { print "no deliveries counted"; exit }
    printf "| figure | value |\n|---|---:|\n"
    printf "| deliveries per second | %.0f |\n", d / '"$PERF_SECONDS"'
    printf "| nodes CPU (cores busy) | %.2f |\n", (u + s) / hz / '"$PERF_SECONDS"'
    printf "| CPU per delivery (us), user / kernel | %.2f / %.2f |\n", u / hz / d * 1e6, s / hz / d * 1e6
    if (m > 0) printf "| Redis CPU per message published (us) | %.1f |\n", r / hz / m * 1e6
    printf "| kernel share of the CPU | %.0f%% |\n", (u + s > 0) ? 100 * s / (u + s) : 0
    if (w > 0) {
      printf "| WebSocket writes per delivery | %.3f |\n", w / d
      printf "| packets per write | %.2f |\n", p / w
      printf "| bytes per write | %.0f |\n", b / w
    }
  }'
  if [[ -s "$OUT/syscalls.txt" ]]; then
    awk -v d="$deliveries" '$2 ~ /^(raw_)?syscalls:/ { gsub(",", "", $1); name = $2; sub(/^syscalls:sys_enter_/, "", name);
      sub(/^raw_syscalls:sys_enter/, "all system calls", name); printf "| %s per delivery | %.3f |\n", name, $1 / d }' "$OUT/syscalls.txt"
  fi
  if [[ -s "$OUT/perf.data" ]]; then
    # Kernel time under each system call's entry point, the scheduler's
    # switch and wake-up paths (charged where they run), and the rest.
    perf report -i "$OUT/perf.data" --children --sort sym --stdio -g none 2>/dev/null >"$OUT/children.txt" || true
    echo
    echo "Node 1's CPU by where it is spent (perf, share of samples; a call's share includes the"
    echo "scheduling done inside it):"
    echo
    awk -v d="$deliveries" -v u="$user" -v s="$sys" -v hz="$HZ" '
      # The kernel function every such call goes through (the entry
      # points themselves are often tail calls, missing from the stacks).
      BEGIN { split("__sys_sendmsg sendmsg __sys_sendto sendto ksys_write write do_writev writev " \
        "__sys_recvfrom recvfrom ksys_read read do_epoll_wait epoll_wait do_futex futex", m, " ")
        for (i = 1; i < 16; i += 2) call[m[i]] = m[i + 1] }
      ($NF in call) { gsub("%", "", $1); share[call[$NF]] = $1 }
      $NF == "finish_task_switch.isra.0" || $NF == "_raw_spin_unlock_irqrestore" { gsub("%", "", $2); sched += $2 }
      END {
        us = (u + s) / hz / d * 1e6
        printf "| where | share | us per delivery (of %.1f, all nodes alike) |\n|---|---:|---:|\n", us
        split("sendmsg sendto write writev recvfrom read epoll_wait futex", order, " ")
        for (i = 1; i <= 8; i++) if (order[i] in share) {
          printf "| %s | %.1f%% | %.2f |\n", order[i], share[order[i]], share[order[i]] / 100 * us
          calls += share[order[i]]
        }
        printf "| all of these | %.1f%% | %.2f |\n", calls, calls / 100 * us
        printf "| scheduler switch and wake-up (self time, anywhere) | %.1f%% | %.2f |\n", sched, sched / 100 * us
        printf "| the rest (user space, other kernel work) | %.1f%% | %.2f |\n", 100 - calls, (100 - calls) / 100 * us
      }' "$OUT/children.txt"
    echo
    echo "Node 1, perf record -e cpu-clock -g (self time, top 25 symbols):"
    echo
    echo '```'
    perf report -i "$OUT/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
      grep -v '^#' | grep -v '^$' | head -n 25
    echo '```'
  fi
} | tee "$OUT/summary.md"
