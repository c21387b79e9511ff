"""The bearer token a scheduler client sends, from a literal or a file that rotates.

On Kubernetes a worker pod's token is a projected service-account token the kubelet
rewrites before it expires (`TETHER_TOKEN_FILE`); a client may be handed a token
directly (`TETHER_TOKEN`). Without either nothing is sent (dev mode needs none).
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "StaticToken",
    "TokenFile",
    "TokenSource",
    "token_from_env",
]

TOKEN_ENV = "TETHER_TOKEN"
TOKEN_FILE_ENV = "TETHER_TOKEN_FILE"
CHECK_INTERVAL_SECONDS = 1.0
"""How often the token file is looked at (a stat) for a new token."""


class TokenSource(abc.ABC):
    """Something that knows the token to send now (None: send no Authorization)."""

    @abc.abstractmethod
    def current(self) -> str | None:
        """The token to send with the next request."""


class StaticToken(TokenSource):
    """One token for the client's lifetime."""

    def __init__(self, token: str) -> None:
        self._token = token.strip() or None

    def current(self) -> str | None:
        return self._token


class TokenFile(TokenSource):
    """A token file, read again when it changes (checked at most once a second).

    The kubelet replaces a projected token by swapping a symlink, so the file's
    inode, size or modification time changes. A file that cannot be read keeps the
    last token (a request with a stale token gets a clear 401, a missing header not).
    """

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._checked = float("-inf")
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None

    def current(self) -> str | None:
        now = self._clock()
        if now - self._checked < CHECK_INTERVAL_SECONDS:
            return self._token
        self._checked = now
        try:
            info = self.path.stat()
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
            if stamp != self._stamp:
                self._token = self.path.read_text().strip() or None
                self._stamp = stamp
        except OSError:
            pass
        return self._token


def token_from_env() -> TokenSource | None:
    """`TETHER_TOKEN` (a token), else `TETHER_TOKEN_FILE` (a file to read), else None."""
    if token := os.environ.get(TOKEN_ENV, "").strip():
        return StaticToken(token)
    if path := os.environ.get(TOKEN_FILE_ENV, "").strip():
        return TokenFile(path)
    return None
