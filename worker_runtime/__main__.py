"""``python -m worker_runtime PATH [--worker-id ID]``: run a worker for a Python file."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import traceback

from .client import DEFAULT_SCHEDULER_URL
from .errors import SchedulerRequestError, SchedulerUnavailableError
from .gc_tuning import tune_gc
from .loader import discover_all, load_module
from .logs import configure_logging, log_format
from .run import env_float, env_int
from .worker import DEFAULT_SHUTDOWN_GRACE, Worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker_runtime",
        description="Run a Tether worker for the workflows and activities defined in PATH.",
    )
    parser.add_argument(
        "path", nargs="?", help="Python file with @workflow.define classes and activities"
    )
    parser.add_argument(
        "--signal",
        metavar="NAME",
        help="send signal NAME (TERM, INT, KILL) to the worker running as PID 1 in this "
        "container and exit: `kubectl exec POD -- python -m worker_runtime --signal TERM` "
        "restarts a pod's worker (the image has no `kill`)",
    )
    parser.add_argument("--worker-id", help="worker identity (default: $TETHER_WORKER_ID)")
    parser.add_argument(
        "--scheduler-url", help=f"default: $TETHER_SCHEDULER_URL or {DEFAULT_SCHEDULER_URL}"
    )
    parser.add_argument("--slots", type=int, help="concurrent activities (default $TETHER_SLOTS)")
    parser.add_argument("--log-level", default=os.environ.get("TETHER_LOG_LEVEL", "WARNING"))
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (default: $TETHER_METRICS_PORT or 0: none)",
    )
    parser.add_argument(
        "--log-format",
        help="text, or json: one object per line with the run, activity, attempt and "
        "session a line is about (default: $TETHER_LOG_FORMAT or text)",
    )
    return parser


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    stops: list[asyncio.Task[None]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stops.append(loop.create_task(worker.stop())))
    tune_gc()
    await worker.run()


TERMINATION_LOG = "/dev/termination-log"
"""Where Kubernetes reads why a container ended (`terminationMessagePath`'s default);
`$TETHER_TERMINATION_LOG` names another. Written only if it exists."""


def _fail(message: str, code: int) -> int:
    """Say why the worker cannot run, on stderr and to Kubernetes (the pod's
    `lastState.terminated.message`, which its WorkerPool shows); return `code`."""
    print(f"worker_runtime: {message}", file=sys.stderr)
    path = os.environ.get("TETHER_TERMINATION_LOG") or TERMINATION_LOG
    if os.path.exists(path):
        try:
            with open(path, "w") as log:
                log.write(message[:4000])
        except OSError:
            pass  # stderr has it already; the termination message is a courtesy
    return code


def _load_error(path: str, exc: BaseException) -> str:
    """One line naming the file, the line and the error of a module that cannot load."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename or path}, line {exc.lineno}"
        return f"cannot load {path}: {type(exc).__name__}: {exc.msg} ({where})"
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if os.path.realpath(f.filename) == os.path.realpath(path)]
    frame = (own or frames)[-1] if frames else None
    where = f" ({frame.filename}, line {frame.lineno})" if frame else ""
    return f"cannot load {path}: {type(exc).__name__}: {exc}{where}"


def _send_signal(name: str, pid: int = 1) -> int:
    """Send signal `name` to `pid` (the container's worker); 0 if it was sent."""
    try:
        sig = signal.Signals[f"SIG{name.upper().removeprefix('SIG')}"]
    except KeyError:
        print(f"worker_runtime: --signal: no signal named {name!r}", file=sys.stderr)
        return 2
    try:
        os.kill(int(os.environ.get("TETHER_SIGNAL_PID", pid)), sig)
    except OSError as exc:
        print(f"worker_runtime: --signal {sig.name}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.signal:
        return _send_signal(args.signal)
    if not args.path:
        parser.error("the following arguments are required: path")
    try:
        fmt = log_format(args.log_format)
    except ValueError as exc:
        parser.error(str(exc))
    host = socket.gethostname()
    worker_id = args.worker_id or os.environ.get("TETHER_WORKER_ID") or f"{host}-{os.getpid()}"
    pod = os.environ.get("TETHER_POD_NAME") or host
    configure_logging(args.log_level, fmt, {"worker": worker_id, "pod": pod})
    try:
        module = load_module(args.path)
    except FileNotFoundError as exc:
        return _fail(str(exc), 2)
    except Exception as exc:  # the user's code: a syntax error, a failing import, ...
        traceback.print_exc()
        return _fail(_load_error(args.path, exc), 3)
    workflows, activities = discover_all(module)
    if not workflows and not activities:
        return _fail(f"{args.path} defines no workflows or activities", 2)
    url = args.scheduler_url or os.environ.get("TETHER_SCHEDULER_URL") or DEFAULT_SCHEDULER_URL
    try:
        worker = Worker(
            workflows,
            activities,
            scheduler_url=url,
            worker_id=worker_id,
            pod=os.environ.get("TETHER_POD_NAME") or worker_id,
            node=os.environ.get("TETHER_NODE_NAME") or host,
            pool=os.environ.get("TETHER_POOL", ""),
            slots=args.slots or env_int("TETHER_SLOTS", 8),
            session_capacity=env_int("TETHER_SESSION_CAPACITY", 4),
            connect_timeout=env_float("TETHER_CONNECT_TIMEOUT", 10.0),
            shutdown_grace=env_float("TETHER_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE),
            namespace=os.environ.get("TETHER_POD_NAMESPACE", ""),
            metrics_port=(
                env_int("TETHER_METRICS_PORT", 0)
                if args.metrics_port is None
                else args.metrics_port
            ),
        )
        asyncio.run(_serve(worker))
    except SchedulerUnavailableError as exc:
        return _fail(f"scheduler unreachable: {exc}", 1)
    except (SchedulerRequestError, ValueError, TypeError) as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
