"""A `RunStore` in files that outlives the scheduler process (tests only, not the product).

One JSON-lines file per run, appended with a single `write` per batch, so a SIGKILL
leaves whole batches: what `append` returned for is in the file, and a torn last
line (a kill inside the write) is ignored on load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote


class FileRunStore:
    """Durable history in `directory`, one `<run id>.jsonl` file per run."""

    durable = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, run_id: str) -> Path:
        return self.directory / f"{quote(run_id, safe='')}.jsonl"

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(ev, separators=(",", ":")) + "\n" for ev in events).encode()
        fd = os.open(self._path(run_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            written = os.write(fd, data)
            while written < len(data):
                written += os.write(fd, data[written:])
        finally:
            os.close(fd)

    async def load(self, run_id: str) -> list[dict[str, Any]]:
        path = self._path(run_id)
        if not path.exists():
            return []
        events = []
        for line in path.read_bytes().split(b"\n"):
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                break  # torn by a kill inside the write: the batch was not acknowledged
        return events

    async def run_ids(self) -> list[str]:
        return sorted(
            unquote(p.name.removesuffix(".jsonl")) for p in self.directory.glob("*.jsonl")
        )

    async def delete(self, run_id: str) -> None:
        self._path(run_id).unlink(missing_ok=True)
