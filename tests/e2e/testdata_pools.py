"""A WorkerPool that serves one of `testdata/`'s workflow files, mounted from a ConfigMap
into the stock image (no image of its own to build)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import IMAGE
from tests.e2e.kube import API_VERSION, Kube, Obj

TESTDATA = Path(__file__).parent / "testdata"


def worker_container(script: str, *, workflow: str | None = None, image: str = IMAGE) -> Obj:
    """The worker container: `image` running the workflow file `script`, mounted from a
    ConfigMap at /workflows. With `workflow`, a `testdata/` file that reads
    TETHER_E2E_WORKFLOW registers its workflow under that name."""
    env = [{"name": "TETHER_LOG_LEVEL", "value": "INFO"}]
    if workflow is not None:
        env.insert(0, {"name": "TETHER_E2E_WORKFLOW", "value": workflow})
    return {
        "name": "worker",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "worker_runtime", f"/workflows/{script}"],
        "env": env,
        "volumeMounts": [{"name": "workflows", "mountPath": "/workflows", "readOnly": True}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    }


def script_pool(
    pool: str,
    script: str,
    *,
    source: str | None = None,
    workflow: str | None = None,
    configmap: str | None = None,
    image: str = IMAGE,
    template: Obj | None = None,
    **spec: Any,
) -> list[Obj]:
    """ConfigMap `configmap` (default `<pool>-workflow`) holding the workflow file
    `script` (`source`, else `testdata/<script>`), and WorkerPool `pool` (one pod unless
    `spec` says otherwise) running it; `template` adds to the pod template (metadata, pod
    spec fields). With `workflow`, also Workflow `workflow` naming the pool, whose name
    the workers register the file's workflow under (see `worker_container`)."""
    configmap = configmap or f"{pool}-workflow"
    pod = dict((template or {}).get("spec") or {})
    pod_template = {
        **(template or {}),
        "spec": {
            "containers": [worker_container(script, workflow=workflow, image=image)],
            "volumes": [{"name": "workflows", "configMap": {"name": configmap}}],
            **pod,
        },
    }
    objects: list[Obj] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": configmap},
            "data": {script: source if source is not None else (TESTDATA / script).read_text()},
        },
        {
            "apiVersion": API_VERSION,
            "kind": "WorkerPool",
            "metadata": {"name": pool},
            "spec": {"replicas": 1, "template": pod_template, **spec},
        },
    ]
    if workflow is not None:
        objects.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Workflow",
                "metadata": {"name": workflow},
                "spec": {"workerPool": pool},
            }
        )
    return objects


def create_run(ns: Kube, workflow: str, *, name: str | None = None, **spec: Any) -> str:
    """Create a WorkflowRun of `workflow` (`input` and the rest of `spec` as given),
    named `name` (else a generated name); its name."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "metadata": {"name": name} if name else {"generateName": f"{workflow}-"},
        "spec": {"workflowRef": {"name": workflow}, **spec},
    }
    return ns.create(yaml.safe_dump(body))


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
    return create_run(ns, workflow, input=given), tag
