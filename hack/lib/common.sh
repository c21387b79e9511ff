# shellcheck shell=bash
# Shared helpers for hack/ scripts. Sourced, never executed.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=versions.sh
source "$HACK_DIR/lib/versions.sh"

TETHER_CACHE=${TETHER_CACHE:-$HOME/.cache/tether}
BIN_CACHE="$TETHER_CACHE/bin/kube-$KUBE_VERSION"
TOOLS_CACHE="$TETHER_CACHE/bin/tools-$KUBECTL_LAYER_VERSION"
DNS_CACHE="$TETHER_CACHE/bin/coredns-$COREDNS_VERSION-kubeadm" # binaries.sh: the plugins kubeadm uses

log() { printf '\033[1m[hack]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[hack] error:\033[0m %s\n' "$*" >&2; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND every 0.5 s until it
# succeeds, or die naming DESCRIPTION.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.5
  done
}
