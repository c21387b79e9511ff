#!/usr/bin/env bash
# A guided tour of Tether dev mode (run it with `make demo`):
#   1. start `tether dev examples/ml_inference.py --workers 3` in the background,
#   2. run the sticky ML workflow and wait for it, list runs, describe the run,
#   3. start a longer run, kill its session's worker process mid-run, and show the
#      session Broken and the run finishing on another worker,
#   4. stop dev mode (Ctrl-C semantics) and leave nothing behind.
# Every command it shows is printed with its quotes, so it can be pasted back.
# Sourcing it (the tests do) defines the functions and runs nothing.

PORT="${DEMO_PORT:-7233}"
EXAMPLE="${DEMO_FILE:-examples/ml_inference.py}"
CRASH_ITEMS="${DEMO_CRASH_ITEMS:-12}"
DEV_PID=""
LOG=""
PY=""

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

shell_quote() {  # shell_quote ARG...: the arguments as one command line a shell reads back as is
    local arg line=""
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
            line+="$arg "
        else  # single quotes keep everything; a ' inside becomes '\''
            line+="'${arg//\'/\'\\\'\'}' "
        fi
    done
    printf '%s' "${line% }"
}

show() { printf '\033[36m$ %s\033[0m\n' "$(shell_quote "$@")"; "$@"; }

teardown() {
    local code=$?
    if [ -n "$DEV_PID" ] && kill -0 "$DEV_PID" 2>/dev/null; then
        bold "Stopping dev mode (SIGTERM, as Ctrl-C would)"
        kill -TERM "$DEV_PID" 2>/dev/null || true
        wait "$DEV_PID" 2>/dev/null || true
        tail -n 2 "$LOG"
    fi
    if [ "$code" != 0 ]; then
        echo "demo failed (exit $code); dev-mode log: $LOG" >&2
    else
        rm -f "$LOG"
    fi
}

json_field() {  # json_field EXPR: evaluate a Python expression over `d` (stdin JSON); "" if none
    "$PY" -c "import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
print($1)"
}

batch() {  # batch N: {"batch": [{"x": 1}, ..., {"x": N}]}
    "$PY" -c "import json, sys; print(json.dumps({'batch': [{'x': i} for i in range(1, int(sys.argv[1]) + 1)]}))" "$1"
}

worker_pid() {  # worker_pid WORKER_ID: the pid of that dev worker (a child of tether dev)
    local pid
    for pid in $(pgrep -P "$DEV_PID"); do
        if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "TETHER_WORKER_ID=$1"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

main() {
    set -euo pipefail
    cd "$(dirname "$0")/.."
    export TETHER_SERVER="http://127.0.0.1:${PORT}"
    LOG="$(mktemp -t tether-demo.XXXXXX.log)"
    PY="$(command -v python)"
    # Each prediction takes a moment, so the crash lands in the middle of a session.
    export TETHER_EXAMPLE_PREDICT_SECONDS="${TETHER_EXAMPLE_PREDICT_SECONDS:-0.4}"
    trap teardown EXIT
    trap 'exit 130' INT TERM

    [ -f "$EXAMPLE" ] || { echo "error: $EXAMPLE not found" >&2; exit 1; }

    bold "Starting dev mode: $(shell_quote tether dev "$EXAMPLE" --workers 3 --port "$PORT")   (log: $LOG)"
    tether dev "$EXAMPLE" --workers 3 --port "$PORT" >"$LOG" 2>&1 &
    DEV_PID=$!

    local alive=0
    for _ in $(seq 1 150); do
        alive="$(tether get workers -o json 2>/dev/null | json_field 'sum(w["alive"] for w in d["workers"])' || true)"
        [ "${alive:-0}" -ge 3 ] && break
        kill -0 "$DEV_PID" 2>/dev/null || { cat "$LOG"; echo "error: tether dev exited" >&2; exit 1; }
        sleep 0.2
    done
    [ "${alive:-0}" -ge 3 ] || { cat "$LOG"; echo "error: workers did not register" >&2; exit 1; }
    sed -n '1,40p' "$LOG"
    show tether get workers

    bold "A sticky run: load the model once, predict on the same worker"
    show tether run ml-inference --id demo-1 --input "$(batch 3)" --wait
    show tether get runs
    show tether describe run demo-1

    bold "A worker crash in the middle of a sticky session"
    show tether run ml-inference --id demo-crash --input "$(batch "$CRASH_ITEMS")"
    local victim="" pid
    for _ in $(seq 1 100); do
        victim="$(tether get run demo-crash -o json 2>/dev/null | json_field \
            'next((s["worker"] for s in d["sessions"] if s["state"] == "Open" and s["worker"]), "") if sum(a["state"] == "Completed" for a in d["activities"]) >= 2 else ""' || true)"
        [ -n "$victim" ] && break
        sleep 0.1
    done
    if [ -z "$victim" ]; then
        echo "the run finished (or never opened a session) before the crash could happen" >&2
    else
        pid="$(worker_pid "$victim")"
        echo "session worker: $victim (pid $pid) — killing it with SIGKILL"
        show kill -KILL "$pid"
        sleep 0.3
        show tether get workers
        show tether get run demo-crash -o wide
        sleep 1.5
        bold "What dev mode saw"
        grep -E 'WorkerLost|WorkerExited|WorkerRestarted|Session|Activity|Run(Succeeded|Failed)' "$LOG" | tail -n 8 || true
    fi
    show tether wait run demo-crash --timeout 120
    show tether describe run demo-crash
    bold "Done: the session broke when $victim died, and the run finished on another worker."
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
