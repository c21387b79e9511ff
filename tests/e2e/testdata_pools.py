"""A WorkerPool that serves one of `testdata/`'s workflow files, mounted from a ConfigMap
into the stock image (no image of its own to build)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import IMAGE
from tests.e2e.kube import Kube, Obj

TESTDATA = Path(__file__).parent / "testdata"
API_VERSION = "tether.dev/v1alpha1"


def script_pool(pool: str, script: str, **spec: Any) -> list[Obj]:
    """The ConfigMap `<pool>-workflow` holding `testdata/<script>` and WorkerPool `pool`
    (one pod unless `spec` says otherwise) running it."""
    configmap = f"{pool}-workflow"
    container = {
        "name": "worker",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "worker_runtime", f"/workflows/{script}"],
        "env": [{"name": "TETHER_LOG_LEVEL", "value": "INFO"}],
        "volumeMounts": [{"name": "workflows", "mountPath": "/workflows", "readOnly": True}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    }
    template = {
        "spec": {
            "containers": [container],
            "volumes": [{"name": "workflows", "configMap": {"name": configmap}}],
        }
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": configmap},
            "data": {script: (TESTDATA / script).read_text()},
        },
        {
            "apiVersion": API_VERSION,
            "kind": "WorkerPool",
            "metadata": {"name": pool},
            "spec": {"replicas": 1, "template": template, **spec},
        },
    ]


def start_steps(
    ns: Kube, workflow: str, count: int, seconds: float = 0.0, sticky: bool | None = None
) -> tuple[str, str]:
    """Create a WorkflowRun of a `testdata/steps.py` or `sticky_steps.py` workflow (the
    latter takes `sticky`): its name and its tag, which the steps print so their
    executions can be counted."""
    tag = f"t{uuid.uuid4().hex[:8]}"  # never a number to YAML (e.g. 899145e0)
    given: dict[str, Any] = {"tag": tag, "count": count, "seconds": seconds}
    if sticky is not None:
        given["sticky"] = sticky
    run = {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "metadata": {"generateName": f"{workflow}-"},
        "spec": {"workflowRef": {"name": workflow}, "input": given},
    }
    return ns.create(yaml.safe_dump(run)), tag
