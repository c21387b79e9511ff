# shellcheck shell=bash
# The host side of the cluster network. All nodes share the host's network
# namespace: each node has its own address on the tether0 bridge and its own
# pod bridge and pod subnet, and the host routes between them. One kube-proxy
# programs Services for the whole host.

HOST_BRIDGE=tether0

node_ip() { echo "${NODE_NET}.$((11 + $1))"; }            # 172.30.0.11, .12, ...
node_pod_cidr() { echo "${POD_CIDR%.*.*}.$((1 + $1)).0/24"; } # 10.244.1.0/24, ...
node_bridge() { echo "tcni-$1"; }

network_up() {
  if ! ip link show "$HOST_BRIDGE" >/dev/null 2>&1; then
    ip link add "$HOST_BRIDGE" type bridge
  fi
  ip addr replace "$APISERVER_IP/24" dev "$HOST_BRIDGE"
  local i
  for i in "${!NODES[@]}"; do
    ip addr replace "$(node_ip "$i")/32" dev "$HOST_BRIDGE"
  done
  ip link set "$HOST_BRIDGE" up
  sysctl -qw net.ipv4.ip_forward=1
  # Service traffic between two pods on one bridge must pass iptables.
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
}

# Remove every iptables chain and rule that kube-proxy or the CNI plugins
# made: their names start with KUBE- or CNI-. Killed kubelets never ran CNI DEL.
_iptables_clean() {
  local table rules
  for table in nat filter mangle; do
    rules=$(iptables-save -t "$table" 2>/dev/null) || continue
    grep -q -E 'KUBE-|CNI-' <<<"$rules" || continue
    grep -v -E 'KUBE-|CNI-' <<<"$rules" | iptables-restore -T "$table"
  done
}

network_down() {
  _iptables_clean
  local link
  for link in $(ip -o link show type bridge | awk -F': ' '{print $2}' | grep -E "^(tcni-|$HOST_BRIDGE$)" || true); do
    ip link del "$link"
  done
}
