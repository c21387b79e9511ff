"""Log lines as text or as one JSON object each (`--log-format json`).

In JSON, a line logged inside an activity attempt or workflow code carries that
context's `run`, `workflow`, `activity`, `attempt`, `session`, `pod` and `worker` (a
user's own `logging` calls in an activity included); a record's own `extra=` fields win,
and the process's fields (a worker's id and pod) fill what is left. The operator and the
scheduler pass `extra={"run": ...}` where a line is about a run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from .context import current_activity, current_workflow

__all__ = ["LOG_FIELDS", "JsonFormatter", "LogFormat", "configure_logging", "log_format"]

LogFormat = Literal["text", "json"]

LOG_FIELDS = ("run", "workflow", "activity", "attempt", "session", "pod", "worker")
"""The context fields a JSON line may carry, in this order."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_format(value: str | None = None) -> LogFormat:
    """`value`, else `$TETHER_LOG_FORMAT`, else `text`; ValueError naming the choices."""
    chosen = (value or os.environ.get("TETHER_LOG_FORMAT") or "text").strip().lower()
    if chosen == "text":
        return "text"
    if chosen == "json":
        return "json"
    raise ValueError(f"log format {chosen!r}: use text or json (--log-format, TETHER_LOG_FORMAT)")


def _context() -> dict[str, Any]:
    activity = current_activity.get()
    if activity is not None:
        a = activity.info
        return {
            "run": a.run_id,
            "workflow": a.workflow,
            "activity": a.activity,
            "attempt": a.attempt,
            "session": a.session,
            "pod": a.pod,
            "worker": a.worker_id,
        }
    workflow = current_workflow.get()
    if workflow is not None:
        w = workflow.info()
        return {
            "run": w.run_id,
            "workflow": w.workflow,
            "session": workflow.session_id,
            "pod": w.pod,
            "worker": w.worker_id,
        }
    return {}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", context fields..., "exception"}` per line."""

    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _context()
        for name in LOG_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = context.get(name)
            if value is None:
                value = self._fields.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(
    level: str, fmt: LogFormat = "text", fields: Mapping[str, Any] | None = None
) -> None:
    """Log at `level` to stderr as text or JSON (`fields` go on every JSON line)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(fields) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
