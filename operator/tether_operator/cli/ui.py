"""`tether ui`: open the run timeline page (`/ui/`) of a scheduler in a browser.

With `--server kube` it keeps a `kubectl port-forward` to the leading operator on one
local port until Ctrl-C, and starts it again (same port) when the leader changes, so an
open page goes on. A token (`--token`, `TETHER_TOKEN`) reaches the page in the URL's
fragment, which the browser never sends to a server; the page keeps it for the tab only.
"""

from __future__ import annotations

import time
import webbrowser
from collections.abc import Callable
from urllib.parse import quote

from tether_operator.cli.forward import KUBE_SERVER, LeaderForward
from tether_operator.cli.output import Output

__all__ = ["DEFAULT_UI_PORT", "page_url", "serve_ui"]

DEFAULT_UI_PORT = 8233
"""The local port of `tether ui --server kube` (the operator's own port plus 1000)."""


def page_url(base: str, run_id: str | None = None, token: str | None = None) -> str:
    """The page's URL at `base`: a run's page with `run_id`, with `token` in the fragment."""
    url = f"{base.rstrip('/')}/ui/"
    route = f"/runs/{quote(run_id, safe='')}" if run_id else ""
    if token:
        return f"{url}#token={quote(token, safe='')}" + (f"&to={quote(route)}" if route else "")
    return f"{url}#{route}" if route else url


def serve_ui(
    server: str,
    output: Output,
    *,
    run_id: str | None = None,
    token: str | None = None,
    operator_namespace: str = "tether-system",
    port: int = DEFAULT_UI_PORT,
    open_browser: bool = True,
    opener: Callable[[str], bool] = webbrowser.open,
    stay: Callable[[], bool] = lambda: True,
) -> int:
    """Show the page of `server` (a URL, or `kube`); returns the exit code.

    `stay` is asked once a second whether to keep a kube forward going (tests end it).
    """
    forward = None
    if server == KUBE_SERVER:
        forward = LeaderForward(namespace=operator_namespace, local_port=port)
        base = forward.url()
    else:
        base = server
    try:
        shown = page_url(base, run_id)
        output.print(f"Tether run page: {shown}")
        if token:
            output.print("The token goes to the browser in the URL's fragment (this tab only).")
        if open_browser and not opener(page_url(base, run_id, token)):
            output.print("No browser could be opened here: open the address above.")
        if forward is None:
            return 0
        output.print(f"Forwarding to the leading operator in {operator_namespace}; Ctrl-C stops.")
        while stay():
            time.sleep(1.0)
            if not forward.forwarding():
                output.print("The forward ended (the leader changed?): following the leader.")
                forward.url()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if forward is not None:
            forward.close()
