# shellcheck shell=bash
# Certificates and kubeconfigs for the local cluster, made with openssl.
# Sourced by hack/cluster. ECDSA P-256 keys: fast to make, accepted everywhere.

PKI_DIR="$STATE_DIR/pki"

_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }

# _cert NAME SUBJECT [SANS]: a key and a CA-signed certificate, valid a year.
_cert() {
  local name=$1 subject=$2 sans=${3:-}
  local ext="$PKI_DIR/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } >"$ext"
  _key "$PKI_DIR/$name.key"
  openssl req -new -key "$PKI_DIR/$name.key" -subj "$subject" -out "$PKI_DIR/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 365 -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$PKI_DIR/$name.csr" "$ext"
}

# kubeconfig FILE USER CERT_NAME: a kubeconfig that authenticates with a client cert.
_kubeconfig() {
  local file=$1 user=$2 cert=$3
  cat >"$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: tether
  cluster:
    server: https://$APISERVER_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI_DIR/$cert.crt")
    client-key-data: $(base64 -w0 "$PKI_DIR/$cert.key")
contexts:
- name: tether
  context: {cluster: tether, user: $user}
current-context: tether
KC
}

make_pki() {
  [[ -f $PKI_DIR/.complete ]] && return 0
  log "generating certificates"
  rm -rf "$PKI_DIR" && mkdir -p "$PKI_DIR"
  _key "$PKI_DIR/ca.key"
  openssl req -x509 -new -key "$PKI_DIR/ca.key" -subj "/CN=tether-local-ca" -days 3650 \
    -out "$PKI_DIR/ca.crt" 2>/dev/null
  local svc_ip=${SERVICE_CIDR%.*}; svc_ip="${svc_ip%.*}.0.1"
  _cert apiserver "/CN=kube-apiserver" \
    "IP:$APISERVER_IP,IP:127.0.0.1,IP:$svc_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  _cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  _cert admin "/O=system:masters/CN=kubernetes-admin"
  _cert controller-manager "/CN=system:kube-controller-manager"
  _cert scheduler "/CN=system:kube-scheduler"
  _cert kube-proxy "/CN=system:kube-proxy"
  _key "$PKI_DIR/sa.key"
  openssl ec -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  _kubeconfig "$STATE_DIR/admin.kubeconfig" kubernetes-admin admin
  _kubeconfig "$PKI_DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  _kubeconfig "$PKI_DIR/scheduler.kubeconfig" system:kube-scheduler scheduler
  _kubeconfig "$PKI_DIR/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
  local i node
  for i in "${!NODES[@]}"; do
    node=${NODES[$i]}
    _cert "node-$node" "/O=system:nodes/CN=system:node:$node" "IP:$(node_ip "$i"),DNS:$node"
    _kubeconfig "$PKI_DIR/node-$node.kubeconfig" "system:node:$node" "node-$node"
  done
  touch "$PKI_DIR/.complete"
}
