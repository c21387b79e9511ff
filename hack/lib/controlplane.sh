# shellcheck shell=bash
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kube-proxy
# on the host. Sourced by hack/cluster.

apiserver_ready() {
  kubectl --kubeconfig "$STATE_DIR/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1
}

control_plane_up() {
  local pki=$PKI_DIR bin=$BIN_CACHE
  mkdir -p "$STATE_DIR/etcd"
  start etcd -- etcd --name tether --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "tether=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --quota-backend-bytes 2147483648 --logger zap --log-level warn
  start kube-apiserver -- "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --advertise-address "$APISERVER_IP" --bind-address "$APISERVER_IP" --secure-port "$APISERVER_PORT" \
    --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --default-not-ready-toleration-seconds "$EVICTION_SECONDS" \
    --default-unreachable-toleration-seconds "$EVICTION_SECONDS" \
    --profiling=true --v 1
  wait_for "kube-apiserver (log: $(log_file kube-apiserver))" 90 apiserver_ready
  start kube-controller-manager -- "$bin/kube-controller-manager" \
    --kubeconfig "$pki/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$pki/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$pki/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR" \
    --node-monitor-period 2s --node-monitor-grace-period "$NODE_GRACE" \
    --profiling=false --v 1
  start kube-scheduler -- "$bin/kube-scheduler" \
    --kubeconfig "$pki/scheduler.kubeconfig" \
    --authentication-kubeconfig "$pki/scheduler.kubeconfig" \
    --authorization-kubeconfig "$pki/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v 1
  start kube-proxy -- "$bin/kube-proxy" \
    --kubeconfig "$pki/kube-proxy.kubeconfig" --proxy-mode iptables \
    --cluster-cidr "$POD_CIDR" --hostname-override "$(hostname)" \
    --bind-address 127.0.0.1 --healthz-bind-address 127.0.0.1:10256 \
    --metrics-bind-address 127.0.0.1:10249 --conntrack-max-per-core 0 --v 1
}

control_plane_down() {
  local name
  for name in kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop "$name"
  done
}
