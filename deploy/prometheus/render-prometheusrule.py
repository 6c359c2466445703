#!/usr/bin/env python3
"""Write deploy/kubernetes/base/prometheusrule.yaml from deploy/prometheus/alerts.yaml.

alerts.yaml (a plain Prometheus rule file) is the one source of the alert rules;
the PrometheusRule object of the Kustomize base wraps the same `groups:` for
the Prometheus Operator. Run this after editing alerts.yaml:

    python3 deploy/prometheus/render-prometheusrule.py          # rewrite
    python3 deploy/prometheus/render-prometheusrule.py --check  # exit 1 if stale
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE / "alerts.yaml"
TARGET = HERE.parent / "kubernetes" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by
# deploy/prometheus/render-prometheusrule.py: edit alerts.yaml, then run it.
#
# The alert rules as a Prometheus Operator object. Your Prometheus may select
# rules by label (kube-prometheus-stack: `release: <helm release>`); add that
# label in your overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: gateway
  labels:
    app.kubernetes.io/name: gateway
spec:
"""


def render() -> str:
    lines = SOURCE.read_text().splitlines()
    # Everything from the `groups:` key on; the file's leading comments explain
    # the file itself, not the object.
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "\n".join(("  " + line) if line.strip() else "" for line in lines[start:])
    return HEADER + body + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run {pathlib.Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
