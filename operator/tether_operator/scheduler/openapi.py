"""The scheduler's OpenAPI document, generated from the app and its protocol models.

`python -m tether_operator.scheduler.openapi > docs/openapi.json` rewrites the
committed copy; a test fails when the two differ.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["openapi_document", "openapi_json"]


def openapi_document() -> dict[str, Any]:
    from tether_operator.scheduler.app import create_app
    from tether_operator.scheduler.service import SchedulerService

    return create_app(SchedulerService(), manage_lifecycle=False).openapi()


def openapi_json() -> str:
    """The document as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    sys.stdout.write(openapi_json())


if __name__ == "__main__":
    main()
