"""Settings of `tether dev`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DevOptions:
    """What `tether dev FILE [...]` was asked to run."""

    file: str
    """The Python file defining the workflows and activities the workers run."""
    workers: int = 3
    """How many worker processes to start (`dev-worker-1..N`)."""
    host: str = "127.0.0.1"
    """Address the embedded scheduler listens on."""
    port: int = 7233
    """Port the embedded scheduler listens on."""
    metrics_port: int = 9090
    """Port of Prometheus `/metrics`, on `host` (0: none)."""
    slots: int = 8
    """Concurrent activities per worker."""
    session_capacity: int = 4
    """Concurrent sticky sessions per worker."""
    restart: bool = True
    """Restart a worker that exits (with the same worker id)."""
    db: str | None = None
    """A SQLite file keeping run history across restarts of dev mode (None: memory)."""
    log_format: str = "text"
    """`text`: the scheduler's errors on the console; `json`: the scheduler's and the
    workers' logs as JSON lines on stderr (`worker_runtime.logs`)."""
