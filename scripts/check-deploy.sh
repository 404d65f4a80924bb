#!/usr/bin/env bash
# Checks what ships for deployment: the Kubernetes manifests and the image's
# toolchain. Called by .ci/run before the tests.
#
#   bash scripts/check-deploy.sh           # check
#   bash scripts/check-deploy.sh --write   # refresh deploy/kubernetes/base's copies
#                                          # of the rules and dashboards, then check
#
# 1. The copies in deploy/kubernetes/base (prometheusrule.yaml, dashboards/)
#    equal alerts/webhook-log-exporter.rules.yml and dashboards/*.json.
# 2. `kubectl kustomize` renders the base and every overlay.
# 3. kubernetes-validate --strict (PyPI) accepts every object of a built-in
#    kind, for the oldest Kubernetes the sharded overlay supports (1.28: the
#    pod-index label) and for its newest schemas.
# 4. scripts/check_deploy.py checks the rest: the CRD objects' shape
#    (ServiceMonitor selects the Service and its named port, PrometheusRule's
#    groups equal the shipped rules), the hardening, probes, resources and
#    volumes, credentials only from the Secret, shards = replicas, and the
#    dashboards' ConfigMaps equal dashboards/*.json.
# 5. promtool accepts the rendered PrometheusRule's groups, and every
#    alerts/tests/*.yml unit test passes against them.
# 6. The exporter's --check-config accepts each rendered config.yml, with
#    the rendered Secret's files where the pod mounts them.
# 7. MSRV: Cargo.toml's rust-version equals the Dockerfile's builder
#    (rust:X.Y), is no older than any dependency's rust-version (cargo
#    metadata), and is at least 1.88 when the code has let chains; the
#    toolchain running this is no older than either.
#
# Installs kubectl and promtool (apt: `kubectl`, `prometheus`) and a venv
# with kubernetes-validate and PyYAML (PyPI) when missing; needs cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

write=0
[ "${1:-}" = "--write" ] && write=1

step() { echo "-- $*"; }
fail() { echo "check-deploy: $*" >&2; exit 1; }

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $* (apt)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    fail "missing $*: install it"
  fi
}

command -v kubectl >/dev/null 2>&1 || apt_install kubectl
command -v promtool >/dev/null 2>&1 || apt_install prometheus
# `kubectl kustomize` needs kustomize v5 (older kubectl carry v2-v4).
kv=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
[ "${kv:-0}" -ge 5 ] || fail "kubectl's kustomize is v${kv:-?}, needs v5 (kubectl 1.27 or later)"

venv=${WLE_DEPLOY_VENV:-target/check-deploy-venv}
if ! "$venv/bin/python" -c 'import yaml, kubernetes_validate' 2>/dev/null; then
  echo "creating $venv with kubernetes-validate and PyYAML (PyPI)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate pyyaml
fi
py="$venv/bin/python"

step "copies of the rules and dashboards"
if [ $write = 1 ]; then
  "$py" scripts/check_deploy.py sync --write
fi
"$py" scripts/check_deploy.py sync

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "kubectl kustomize"
renders=()
for dir in deploy/kubernetes deploy/kubernetes/overlays/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  [ "$dir" = deploy/kubernetes ] && name=base
  kubectl kustomize "$dir" >"$work/$name.yaml" || fail "kubectl kustomize $dir failed"
  renders+=("$name=$work/$name.yaml")
  echo "$dir: $(grep -c '^kind:' "$work/$name.yaml") objects"
done

step "manifest checks (scripts/check_deploy.py)"
"$py" scripts/check_deploy.py check "$work/out" "${renders[@]}"

step "kubernetes-validate --strict"
validated=0
for r in "${renders[@]}"; do
  name=${r%%=*}
  for k8s in 1.28.0 latest; do
    args=(--strict --quiet)
    [ "$k8s" = latest ] || args+=(-k "$k8s")
    "$venv/bin/kubernetes-validate" "${args[@]}" "$work/out/$name/builtin.yaml" \
      || fail "$name: kubernetes-validate --strict ${k8s} failed"
  done
  n=$(grep -c '^kind:' "$work/out/$name/builtin.yaml")
  validated=$((validated + n))
  echo "$name: $n built-in objects valid for Kubernetes 1.28 and the newest schemas"
done
echo "$validated built-in objects validated"

step "promtool: the PrometheusRule's groups"
mkdir -p "$work/rule-tests"
for r in "${renders[@]}"; do
  name=${r%%=*}
  rules="$work/out/$name/rules.yml"
  promtool check rules "$rules" >/dev/null || fail "$name: promtool check rules failed"
  rm -f "$work/rule-tests"/*.yml
  for t in alerts/tests/*.yml; do
    sed "s|^  - \.\./webhook-log-exporter\.rules\.yml\$|  - $rules|" "$t" >"$work/rule-tests/$(basename "$t")"
    grep -q "^  - $rules\$" "$work/rule-tests/$(basename "$t")" || fail "$t: no rule_files entry to point at the render"
  done
  promtool test rules "$work/rule-tests"/*.yml >"$work/promtool.log" 2>&1 \
    || { cat "$work/promtool.log" >&2; fail "$name: alerts/tests fail against the rendered PrometheusRule"; }
  echo "$name: $(grep -cE '^ *(- )?(alert|record): ' "$rules") rules pass promtool check and $(ls alerts/tests/*.yml | wc -l) test files"
done

step "--check-config of the rendered configurations"
cargo build --locked --quiet --bin webhook-log-exporter
bin=target/debug/webhook-log-exporter
for r in "${renders[@]}"; do
  name=${r%%=*}
  "$bin" --check-config --config.file "$work/out/$name/config/config.yml" >"$work/check.log" 2>&1 \
    || { cat "$work/check.log" >&2; fail "$name: --check-config refused the rendered config.yml"; }
  if grep -rqF -f <(cat "$work/out/$name/secrets"/* 2>/dev/null | grep -v '^$') "$work/check.log" 2>/dev/null; then
    fail "$name: --check-config printed a credential"
  fi
  echo "$name: $(head -1 "$work/check.log" | sed 's/^[^:]*: //')"
done

step "MSRV"
msrv=$(sed -n 's/^rust-version = "\([0-9.]*\)"$/\1/p' Cargo.toml)
builder=$(sed -n 's/^FROM rust:\([0-9][0-9.]*\)-[a-z]* AS build$/\1/p' Dockerfile)
rustc_v=$(rustc --version | sed -n 's/^rustc \([0-9]*\.[0-9]*\.[0-9]*\).*/\1/p')
[ -n "$msrv" ] || fail "no rust-version in Cargo.toml"
[ -n "$builder" ] || fail "no 'FROM rust:X.Y-… AS build' in Dockerfile"
deps=$(cargo metadata --format-version 1 --locked | "$py" -c '
import json, sys
m = json.load(sys.stdin)
root = {p["id"] for p in m["packages"] if p["id"] in m["workspace_members"]}
vs = [(tuple(int(x) for x in p["rust_version"].split(".")), p["name"]) for p in m["packages"]
      if p.get("rust_version") and p["id"] not in root]
v, name = max(vs)
print(".".join(map(str, v)), name)')
dep_v=${deps% *}
mm() { echo "$1" | cut -d. -f1,2; }
# ver_ge A B: A >= B, comparing major.minor[.patch] numerically.
# 1.88 and 1.88.0 are the same version: both are padded to three parts.
ver3() { case "$1" in *.*.*) echo "$1" ;; *.*) echo "$1.0" ;; *) echo "$1.0.0" ;; esac; }
ver_ge() {
  a=$(ver3 "$1") b=$(ver3 "$2")
  [ "$(printf '%s\n%s\n' "$a" "$b" | sort -V | tail -1)" = "$a" ]
}
[ "$(mm "$msrv")" = "$(mm "$builder")" ] \
  || fail "Cargo.toml rust-version $msrv and the Dockerfile's rust:$builder differ: keep them equal"
ver_ge "$msrv" "$dep_v" \
  || fail "rust-version $msrv is older than a dependency's (${deps#* } asks for $dep_v)"
if grep -rqE '&& +let ' src tests; then
  ver_ge "$msrv" 1.88 || fail "the code has let chains (stable since 1.88), rust-version is $msrv"
fi
ver_ge "$rustc_v" "$msrv" || fail "this toolchain ($rustc_v) is older than rust-version $msrv"
ver_ge "$rustc_v" "$builder" || fail "this toolchain ($rustc_v) is older than the Dockerfile's rust:$builder"
echo "rust-version $msrv = Dockerfile rust:$builder; dependencies need at most $dep_v (${deps#* }); rustc $rustc_v"

echo "check-deploy: OK"
