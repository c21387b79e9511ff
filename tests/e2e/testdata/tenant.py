"""The workflow of the tenancy e2e test, served from a ConfigMap in two namespaces under
one name (`xns`): its result says which namespace and pod ran the workflow code and its
activity, so a test sees at once a run that crossed a namespace."""

import asyncio
import os
from typing import Any

import worker_runtime as workflows


def here() -> str:
    return f"{os.environ.get('TETHER_POD_NAMESPACE', '?')}/{os.environ.get('TETHER_POD_NAME', '?')}"


@workflows.activity(retry_policy_initial_interval=0.1)
async def where(tag: str, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return here()


@workflows.workflow.define(name="xns")
class CrossNamespace:
    @workflows.workflow.entrypoint
    async def execute(self, tag: str, seconds: float = 0.0) -> dict[str, Any]:
        return {"tag": tag, "activity": await where(tag, seconds), "workflow": here()}
