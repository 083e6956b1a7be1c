#!/usr/bin/env bash
# Validates the Helm chart in deploy/helm/candlelight without a cluster:
#
#   1. tools: Helm (scripts/build-helm.sh), the collector distribution
#      (scripts/build-collector.sh) and tools/k8s-validate (built here, cached
#      under $HOME/.cache/candlelight/k8s-validate; its own tests run when it
#      is rebuilt);
#   2. the chart is self-contained (no dependencies to download) and its copy
#      of the alert rules equals prometheus/rules/candlelight-alerts.yml;
#   3. for the default values and every ci/*.yaml set: `helm lint --strict`,
#      `helm template`, every object decoded strictly by k8s-validate, and
#      each collector config (agent, gateway) through `otelcol validate`;
#   4. the metric names the chart relies on exist in the server
#      (src/telemetry/names);
#   5. the chart's guards: a schema typo and a too-short
#      terminationGracePeriodSeconds must fail the render.
#
# Prints one line per step; on failure a line starting with "check-chart: FAIL"
# and exit status 1. Rendered manifests stay in $CHECK_CHART_OUT (default: a
# temporary directory, removed on success).
#
# Usage: scripts/check-chart.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$root/deploy/helm/candlelight"
cache="${CANDLELIGHT_CACHE_DIR:-$HOME/.cache/candlelight}"
release=candlelight
namespace=llm

fail() {
    echo "check-chart: FAIL: $*" >&2
    exit 1
}
step() { echo "check-chart: $*" >&2; }

out="${CHECK_CHART_OUT:-}"
if [ -z "$out" ]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

if ! command -v go >/dev/null 2>&1; then
    for candidate in /usr/local/go/bin /usr/lib/go/bin; do
        if [ -x "$candidate/go" ]; then PATH="$candidate:$PATH"; fi
    done
fi
command -v go >/dev/null 2>&1 || fail "no 'go' toolchain on PATH (Go >= 1.26 from https://go.dev/dl)"

# --- 1. tools ---------------------------------------------------------------
helm="$("$root/scripts/build-helm.sh")" || fail "building Helm (scripts/build-helm.sh)"
otelcol="$("$root/scripts/build-collector.sh")" || fail "building the collector (scripts/build-collector.sh)"

build_k8s_validate() {
    local src="$root/tools/k8s-validate" dir="$cache/k8s-validate"
    local bin="$dir/k8s-validate" hash
    hash="$(cd "$src" && { go version; cat go.mod go.sum ./*.go; } | sha256sum | cut -d' ' -f1)"
    if [ -x "$bin" ] && [ "$(cat "$dir/.source-hash" 2>/dev/null)" = "$hash" ]; then
        echo "$bin"
        return
    fi
    mkdir -p "$dir"
    step "building tools/k8s-validate (first build takes a minute or two)"
    # errexit does not apply inside $(...): every step checks its status.
    (cd "$src" && go vet ./... && go test ./... && CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" .) >&2 || return 1
    mv "$bin.tmp" "$bin" || return 1
    echo "$hash" >"$dir/.source-hash" || return 1
    echo "$bin"
}
validate="$(build_k8s_validate)" || fail "building or testing tools/k8s-validate"
step "tools: $("$helm" version --short), $("$otelcol" --version 2>/dev/null | head -1), k8s-validate"

# --- 2. self-contained chart, alert rules copy -------------------------------
if grep -q '^dependencies:' "$chart/Chart.yaml" || [ -e "$chart/charts" ] || [ -e "$chart/Chart.lock" ]; then
    fail "the chart must have no dependencies (nothing for 'helm dependency' to download)"
fi
rules_src="$root/prometheus/rules/candlelight-alerts.yml"
rules_copy="$chart/files/candlelight-alerts.yml"
[ -f "$rules_src" ] || fail "$rules_src is missing (the PrometheusRule is generated from it)"
cmp -s "$rules_src" "$rules_copy" ||
    fail "deploy/helm/candlelight/files/candlelight-alerts.yml differs from prometheus/rules/candlelight-alerts.yml; run: cp prometheus/rules/candlelight-alerts.yml deploy/helm/candlelight/files/"
step "chart has no dependencies; alert rules copy is current"

# --- 3. lint, render, strict decode, collector configs ------------------------
render_set() {
    local label="$1" values="${2:-}" manifest="$out/$1.yaml"
    local args=(--namespace "$namespace")
    [ -n "$values" ] && args+=(-f "$values")
    "$helm" lint --strict --quiet "$chart" "${args[@]}" >"$out/$label.lint" 2>&1 ||
        { cat "$out/$label.lint" >&2; fail "helm lint --strict ($label)"; }
    "$helm" template "$release" "$chart" "${args[@]}" >"$manifest" 2>"$out/$label.err" ||
        { cat "$out/$label.err" >&2; fail "helm template ($label)"; }
    "$validate" -name "$label" \
        -extract 'app.kubernetes.io/component in (otel-agent,otel-gateway)=config.yaml' \
        -extract-dir "$out/$label-collector" "$manifest" 2>"$out/$label.validate" ||
        { cat "$out/$label.validate" >&2; fail "k8s-validate ($label): objects do not decode strictly"; }
    local n=0 cfg
    for cfg in "$out/$label-collector"/*.yaml; do
        [ -e "$cfg" ] || continue
        # The agent's k8sattributes filter reads the node name from this
        # variable; the DaemonSet sets it from the downward API.
        K8S_NODE_NAME=validate-node "$otelcol" validate --config "$cfg" >"$out/$label.otelcol" 2>&1 ||
            { cat "$out/$label.otelcol" >&2; fail "otelcol validate ($label): $(basename "$cfg")"; }
        n=$((n + 1))
    done
    step "$label: lint ok, $(tail -1 "$out/$label.validate" | sed 's/^k8s-validate: //'), $n collector config(s) valid"
}

render_set default
for values in "$chart"/ci/*.yaml; do
    render_set "$(basename "$values" .yaml)" "$values"
done

# --- 4. metric names the chart relies on exist in the server -----------------
# From the renders: the endpoint picker's mapping and the HPA metric.
names="$({
    cat "$out"/*.yaml | grep -oE '(queuedRequestsSpec|runningRequestsSpec|kvUsageSpec|cacheInfoSpec): [A-Za-z_:]+'
    grep -oE '^  metricName: [A-Za-z_:]+' "$chart/values.yaml"
} | awk '{print $2}' | sort -u || true)"
[ -n "$names" ] || fail "found no metric names in the renders (did the EPP config move?)"
for name in $names; do
    grep -rqw -- "$name" "$root/src/telemetry/names" ||
        fail "the chart uses metric $name, which src/telemetry/names does not define"
done
# The cache info labels the EPP reads must be attributes of
# candlelight.cache_config.info, in their Prometheus spelling (dots become
# underscores; the candlelight. namespace stays as a prefix).
info_labels="$(awk '/^pub const CACHE_CONFIG_INFO:/,/^\);/' "$root/src/telemetry/names/mod.rs" |
    grep -oE '&\[[A-Z_, ]+\]' | tr -d '&[] ' | tr ',' '\n' | while read -r const; do
        sed -n "s/^pub const $const: &str = \"\(.*\)\";/\1/p" "$root/src/telemetry/names/attr.rs" | tr . _
    done)"
[ -n "$info_labels" ] || fail "could not read the attributes of CACHE_CONFIG_INFO from src/telemetry/names"
labels="$(cat "$out"/*.yaml | grep -oE 'cache(BlockSize|NumBlocks)LabelName: [A-Za-z_]+' | awk '{print $2}' | sort -u || true)"
[ -n "$labels" ] || fail "found no cache info label names in the EPP config (did it move?)"
for label in $labels; do
    grep -qx -- "$label" <<<"$info_labels" ||
        fail "the chart reads cache info label $label; candlelight_cache_config_info has: $(echo $info_labels)"
done
step "server defines the metrics the chart uses: $(echo $names | tr ' ' ',') (cache info labels: $(echo $labels | tr ' ' ','))"

# --- 5. the chart's guards ----------------------------------------------------
expect_render_failure() {
    local what="$1" pattern="$2"
    shift 2
    if "$helm" template "$release" "$chart" "$@" >"$out/guard.out" 2>&1; then
        fail "render with $what should fail"
    fi
    grep -q -- "$pattern" "$out/guard.out" || { cat "$out/guard.out" >&2; fail "render with $what failed without '$pattern'"; }
}
expect_render_failure "a typo in values" "additional properties 'replica' not allowed" --set server.replica=3
expect_render_failure "terminationGracePeriodSeconds < preStop + drain + flush" "kill the server mid-drain" \
    --set server.terminationGracePeriodSeconds=20
step "guards: schema typo and short termination grace period are refused"
echo "check-chart: OK" >&2
