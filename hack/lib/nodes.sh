# shellcheck shell=bash
# Worker nodes: one containerd and one kubelet per node, all of a node's
# processes (daemons, shims, containers) inside the cgroup /tether/<node>, so
# stop-node can kill the node the way a power cut would.

node_dir() { echo "$STATE_DIR/nodes/$1"; }
containerd_socket() { echo "$(node_dir "$1")/containerd.sock"; }
node_cgroup() { echo "tether/$1"; }

node_index() {
  local i
  for i in "${!NODES[@]}"; do
    [[ ${NODES[$i]} == "$1" ]] && { echo "$i"; return 0; }
  done
  die "no node named '$1' (nodes: ${NODES[*]})"
}

_write_node_config() {
  local node=$1 i=$2 dir; dir=$(node_dir "$node")
  mkdir -p "$dir/cni" "$dir/kubelet" "$dir/containerd"
  cat >"$dir/containerd.toml" <<TOML
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$(containerd_socket "$node")"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_TAG"
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  # This sandbox has no CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj
  # (-998 for pause) below the caller's: clamp it instead of failing every pod.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$dir/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = "$dir/runc"
TOML
  cat >"$dir/cni/10-tether.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "tether",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$(node_bridge "$node")",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni-ipam",
        "ranges": [[{"subnet": "$(node_pod_cidr "$i")"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  cat >"$dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip "$i")
port: 10250
readOnlyPort: 0
healthzBindAddress: $(node_ip "$i")
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI_DIR/node-$node.crt
tlsPrivateKeyFile: $PKI_DIR/node-$node.key
containerRuntimeEndpoint: unix://$(containerd_socket "$node")
# Each kubelet deletes log directories of pods it does not know: never share them.
podLogsDir: $dir/pod-logs
cgroupDriver: cgroupfs
cgroupRoot: /$(node_cgroup "$node")/pods
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: ""
nodeLeaseDurationSeconds: 8
nodeStatusUpdateFrequency: 2s
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
shutdownGracePeriod: 0s
YAML
}

node_up() {
  local node=$1 i; i=$(node_index "$node")
  local dir; dir=$(node_dir "$node")
  _write_node_config "$node" "$i"
  cgroup_create "$(node_cgroup "$node")/daemons"
  cgroup_create "$(node_cgroup "$node")/pods"
  start "containerd-$node" --cgroup "$(node_cgroup "$node")/daemons" -- \
    containerd --config "$dir/containerd.toml"
  wait_for "containerd on $node (log: $(log_file "containerd-$node"))" 30 \
    ctr -a "$(containerd_socket "$node")" version
  load_images "$node" "$PAUSE_TAG" "$COREDNS_TAG" "$PROJECT_TAG"
  start "kubelet-$node" --cgroup "$(node_cgroup "$node")/daemons" -- \
    "$BIN_CACHE/kubelet" --config "$dir/kubelet.yaml" \
    --kubeconfig "$PKI_DIR/node-$node.kubeconfig" --root-dir "$dir/kubelet" \
    --hostname-override "$node" --node-ip "$(node_ip "$i")" \
    --node-labels "topology.kubernetes.io/zone=zone-${node##*-},tether.dev/local-cluster=true" \
    --v 1
}

# Kill everything the node runs, as a power cut would: no graceful shutdown.
node_stop() {
  local node=$1
  cgroup_kill "$(node_cgroup "$node")"
  rm -f "$(pid_file "containerd-$node")" "$(pid_file "kubelet-$node")"
}

# Unmount what a node's containers and pods left mounted under its directory.
node_unmount() {
  local dir; dir=$(node_dir "$1")
  local mounts
  mounts=$(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
  [[ -z $mounts ]] && return 0
  local m
  for m in $mounts; do umount -l "$m" 2>/dev/null || true; done
}
