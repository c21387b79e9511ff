"""What import contracts cannot see: attribute reach-through into the engine's state."""

from __future__ import annotations

import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
REACH = re.compile(r"\.engine\.(?!\w+\()|\bengine\.state\b")
"""An attribute of `<service>.engine` read without a call (its state), or its `state`."""


def test_only_the_scheduler_holds_the_engine() -> None:
    """The operator, dev mode, the CLI and the SDK use the scheduler's methods; they
    neither call the engine nor read its state (`service.engine.workers`)."""
    offenders = []
    for package in ("operator/tether_operator/k8s", "operator/tether_operator/dev",
                    "operator/tether_operator/cli", "worker_runtime"):  # fmt: skip
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if "service.engine" in code or REACH.search(
                    code.replace("tether_operator.engine", "")
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("package", ["tether_types", "tether_operator", "worker_runtime"])
def test_no_module_imports_itself_back(package: str) -> None:
    """No import circles, type-checking imports included: each module can be read
    knowing only what it imports."""
    graph = grimp.build_graph(package)
    circles = sorted(
        {
            tuple(sorted((a, b)))
            for a in graph.modules
            for b in graph.find_modules_directly_imported_by(a)
            if graph.chain_exists(importer=b, imported=a)
        }
    )
    assert not circles, circles
