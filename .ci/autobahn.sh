#!/usr/bin/env bash
# Autobahn|Testsuite's fuzzing client against the gateway's own WebSocket
# code (gateway/examples/ws_echo.rs, with permessage-deflate on): cases 1-7,
# 9 and 10, and 12 and 13 (compression). Fails on any FAILED or
# UNIMPLEMENTED case; the NON-STRICT and INFORMATIONAL ones are listed in
# docs/protocol.md. The reports go to target/autobahn/report-{a,b} (not in git).
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/autobahn
mkdir -p "$out"

# Python 2.7 (pyenv on these machines) in a virtualenv of its own.
py27="${PY27:-}"
if [ -z "$py27" ]; then
  for c in "$(pyenv root 2>/dev/null || echo /root/.pyenv)"/versions/2.7*/bin/python2.7 "$(command -v python2.7 || true)"; do
    if [ -x "$c" ]; then py27="$c"; break; fi
  done
fi
[ -n "$py27" ] || { echo "Python 2.7 is needed for Autobahn|Testsuite"; exit 1; }
if [ ! -x "$out/venv/bin/wstest" ]; then
  "$py27" -m pip install -q --user virtualenv 2>/dev/null || true
  "$py27" -m virtualenv -q "$out/venv"
  "$out/venv/bin/pip" install -q "autobahntestsuite==25.10.1" 2>&1 | grep -v -i deprecation || true
fi

cargo build -q -p gateway --example ws_echo
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/debug/examples/ws_echo "127.0.0.1:$port" --deflate > "$out/echo.log" 2>&1 &
echo_pid=$!
trap 'kill $echo_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done

# Two fuzzing clients at once, one per core: the compression cases (12, 13)
# are slow in the Python client, and each half takes about as long.
write_spec() {
  cat > "$out/fuzzingclient-$1.json" <<JSON
{
  "outdir": "$out/report-$1",
  "servers": [{"agent": "gateway", "url": "ws://127.0.0.1:$port"}],
  "cases": [$2],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
  rm -rf "$out/report-$1"
}
write_spec a '"1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.*"'
write_spec b '"13.*"'
pids=()
for half in a b; do
  timeout 2400 "$out/venv/bin/wstest" -m fuzzingclient -s "$out/fuzzingclient-$half.json" \
    > "$out/wstest-$half.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
[ "$status" -eq 0 ] || { echo "wstest failed ($status)"; tail -20 "$out"/wstest-*.log; exit 1; }

python3 - "$out/report-a/index.json" "$out/report-b/index.json" <<'PY'
import collections, json, sys
cases = {}
for path in sys.argv[1:]:
    cases.update(json.load(open(path))["gateway"])
counts = collections.Counter(c["behavior"] for c in cases.values())
print("Autobahn|Testsuite:", len(cases), "cases,", dict(counts))
def key(k):
    return [int(p) for p in k.split(".")]
bad = []
for k in sorted(cases, key=key):
    c = cases[k]
    if c["behavior"] != "OK" or c["behaviorClose"] not in ("OK", "INFORMATIONAL"):
        print("  %s %s (close: %s)" % (k, c["behavior"], c["behaviorClose"]))
    if "FAILED" in (c["behavior"], c["behaviorClose"]) or c["behavior"] == "UNIMPLEMENTED":
        bad.append(k)
if bad:
    print("FAILED:", ", ".join(bad))
    sys.exit(1)
PY
