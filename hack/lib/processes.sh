# shellcheck shell=bash
# Starting, finding and stopping the cluster's daemons. Each daemon has a pid
# file and a log under $STATE_DIR; node daemons also run inside the node's
# cgroup so that everything a node started can be killed together.

pid_file() { echo "$STATE_DIR/run/$1.pid"; }
log_file() { echo "$STATE_DIR/logs/$1.log"; }

running() {
  local pid
  pid=$(cat "$(pid_file "$1")" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

# start NAME [--cgroup PATH] -- COMMAND...: start COMMAND detached unless NAME
# already runs.
start() {
  local name=$1; shift
  local cgroup=""
  if [[ $1 == --cgroup ]]; then cgroup=$2; shift 2; fi
  [[ $1 == -- ]] && shift
  running "$name" && return 0
  mkdir -p "$STATE_DIR/run" "$STATE_DIR/logs"
  local log; log=$(log_file "$name")
  echo "--- $(date -Is) $*" >>"$log"
  if [[ -n $cgroup ]]; then
    setsid bash -c 'for d in "$1"/*/; do echo $$ >"$d$2/cgroup.procs" 2>/dev/null || true; done
                    shift 2; exec "$@"' _ "$CGROUP_FS" "$cgroup" "$@" >>"$log" 2>&1 </dev/null &
  else
    setsid "$@" >>"$log" 2>&1 </dev/null &
  fi
  echo $! >"$(pid_file "$name")"
}

# stop NAME: SIGTERM, then SIGKILL after 10 s.
stop() {
  local name=$1 pid
  pid=$(cat "$(pid_file "$name")" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(pid_file "$name")"
}

# Every controller of the cgroup v1 hierarchy (and the v2 tree, if mounted).
CGROUP_FS=/sys/fs/cgroup

cgroup_create() {
  local path=$1 d
  for d in "$CGROUP_FS"/*/; do
    [[ -f ${d}cgroup.procs ]] || continue
    mkdir -p "$d$path"
    # A cpuset cgroup takes no task until it has cpus and mems of its own.
    if [[ -f ${d}cpuset.cpus ]]; then
      local parent="$d" part
      for part in ${path//\// }; do
        [[ -s $parent$part/cpuset.cpus ]] || cat "${parent}cpuset.cpus" >"$parent$part/cpuset.cpus"
        [[ -s $parent$part/cpuset.mems ]] || cat "${parent}cpuset.mems" >"$parent$part/cpuset.mems"
        parent="$parent$part/"
      done
    fi
  done
}

# cgroup_kill PATH: SIGKILL every process under PATH, until none is left.
cgroup_kill() {
  local path=$1 round pids
  for round in $(seq 50); do
    pids=$(find "$CGROUP_FS/pids/$path" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    [[ -z $pids ]] && return 0
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  die "processes left in cgroup $path: $pids"
}

# cgroup_remove PATH: remove PATH and everything below it, deepest first.
cgroup_remove() {
  local path=$1 d
  for d in "$CGROUP_FS"/*/; do
    [[ -d $d$path ]] || continue
    find "$d$path" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
