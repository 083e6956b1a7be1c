#!/usr/bin/env bash
# Installs the system packages the tests and the stack need (Debian): Prometheus
# (and promtool), Alertmanager (and amtool), PostgreSQL and HAProxy (the local
# cluster's balancer, scripts/cluster.sh), and the C++ build tools for
# llama.cpp's quantize tool. Skips what is already there.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
# llama.cpp's quantize tool (scripts/make-test-models.sh) builds with these.
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1 || need+=(build-essential)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The GPU check's bundle (scripts/gpu-check.sh, tests/gpu_check_cpu.rs) strips and compresses.
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v strip >/dev/null 2>&1 || need+=(binutils)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: all present"
  exit 0
fi
echo "install-deps: installing ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Packages start their own services on install where allowed; tests start their own.
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "install-deps: done"
