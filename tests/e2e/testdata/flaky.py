"""The workflow of the field e2e tests, served from a ConfigMap: activities that always
fail, one with no retry policy in its code and one with its own, so the number of
attempts shows which retry policy applied (a Workflow's spec.retry, or the code's)."""

import worker_runtime as workflows


@workflows.activity()
async def plain(tag: str) -> None:
    raise RuntimeError(f"plain {tag} fails")


@workflows.activity(retry_policy_max_attempts=4, retry_policy_initial_interval=0.1)
async def own_policy(tag: str) -> None:
    raise RuntimeError(f"own-policy {tag} fails")


@workflows.workflow.define(name="flaky")
class Flaky:
    @workflows.workflow.entrypoint
    async def execute(self, tag: str, own: bool = False) -> None:
        if own:
            await own_policy(tag)
        else:
            await plain(tag)
