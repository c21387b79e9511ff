"""The run timeline page on the chart's operator, in Debian's chromium (issue 19).

`tether ui --server kube` port-forwards to the leader; the page reads the API with the
token of a ServiceAccount bound to the chart's `tether-view` ClusterRole. While a sticky
run's page is open, its session's pod is deleted with kubectl: the break (`PodDeleted`)
and the rebind to the other pod, cold, appear without a reload. A run no worker can
start says why in the runs list, as its condition does in `kubectl get wfr`. A token
without RBAC on workflowruns gets the 403 naming what to grant.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.browser import attribute_values, page
from tests.e2e.conftest import RELEASE, Install
from tests.e2e.kube import Kube
from tests.e2e.scenario import run, serve, steps
from tether_operator.cli.ui import page_url

pytestmark = [pytest.mark.timeout(600), pytest.mark.browser]

POOL = "ui-steps"
AUDIENCE = "tether.dev/scheduler"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def base(kube: Kube) -> Iterator[str]:
    """`tether ui --server kube --no-open` running: the base URL it forwards."""
    env = {**os.environ, "KUBECONFIG": kube.kubeconfig}
    env.pop("TETHER_SERVER", None)
    port = free_port()
    command = [sys.executable, "-m", "tether_operator.cli", "ui", "--server", "kube",
               "--no-open", "--port", str(port)]  # fmt: skip
    ui = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)  # fmt: skip
    try:
        assert ui.stdout is not None
        line = ui.stdout.readline()
        found = re.search(r"Tether run page: (http://127\.0\.0\.1:(\d+))/ui/", line)
        assert found, f"tether ui printed {line!r}"
        assert int(found.group(2)) == port
        yield found.group(1)
    finally:
        ui.terminate()
        ui.wait(10)
        if ui.stdout is not None:
            ui.stdout.close()


def account(ns: Kube, name: str, cluster_role: str | None = None) -> str:
    """A ServiceAccount, bound to `cluster_role` in its namespace; its scheduler token."""
    ns.run("create", "serviceaccount", name)
    if cluster_role is not None:
        ns.run("create", "rolebinding", name, f"--clusterrole={cluster_role}",
               f"--serviceaccount={ns.namespace}:{name}")  # fmt: skip
    return ns.run("create", "token", name, "--audience", AUDIENCE).strip()


async def test_a_run_page_shows_a_deleted_pods_break_and_the_rebind_live(
    tether: Install, base: str
) -> None:
    ns = tether.workloads["ui"]
    pool = await asyncio.to_thread(lambda: serve(ns, POOL, "sticky_steps.py", replicas=2).ready(2))
    viewer = account(ns, "viewer", f"{RELEASE}-view")  # the chart's role for readers
    stranger = account(ns, "stranger")
    waiting = run(ns, "ui-nobody-serves-this")
    sticky = steps(ns, POOL, count=80, seconds=0.25, sticky=True)
    run_id = f"{ns.namespace}.{sticky.name}"

    async with page(page_url(base, token=viewer)) as tab:
        row = await tab.wait_for_selector(
            f"tr[data-run='{ns.namespace}.{waiting.name}'] [data-message]", timeout=60_000
        )
        assert row is not None
        assert "ui-nobody-serves-this" in await row.inner_text()

        await tab.goto(page_url(base, run_id))
        binding = await tab.wait_for_selector("svg.gantt [data-binding-pod]", timeout=120_000)
        assert binding is not None
        first = await binding.get_attribute("data-binding-pod")
        assert first
        await tab.wait_for_selector(
            f"svg.gantt g[data-pod='{first}'][data-state=Completed]", timeout=60_000
        )
        await tab.evaluate("() => { window.sameDocument = true; }")
        await asyncio.to_thread(ns.run, "delete", "pod", first, "--wait=false")

        await tab.wait_for_selector("svg.gantt [data-break-reason=PodDeleted]", timeout=30_000)
        pods = await attribute_values(tab, "svg.gantt [data-break-reason]", "data-break-pod")
        assert pods == [first]
        await tab.wait_for_function(
            "() => document.querySelectorAll('svg.gantt [data-binding-pod]').length === 2",
            timeout=60_000,
        )
        bound = await attribute_values(tab, "svg.gantt [data-binding-pod]", "data-binding-pod")
        assert bound[0] == first
        assert bound[1] != first
        await tab.wait_for_selector(
            f"svg.gantt g[data-pod='{bound[1]}'] [data-cold]", timeout=60_000
        )
        await tab.wait_for_selector("h1 [data-phase=Succeeded]", timeout=180_000)
        assert await tab.evaluate("() => window.sameDocument === true"), "the page reloaded"

        await tab.click("a[data-nav=workers]")
        await tab.wait_for_selector(f"h2[data-pool='{ns.namespace}/{POOL}']", timeout=30_000)
        assert await tab.locator("tr[data-worker]").count() >= 2

    async with page(page_url(base, run_id, stranger)) as tab:
        refusal = await tab.wait_for_selector("[data-refusal='403']", timeout=30_000)
        assert refusal is not None
        text = await refusal.inner_text()
        assert f"may not get workflowruns in namespace '{ns.namespace}'" in text

    ns.delete("wfr", waiting.name, "--wait=false")
    await asyncio.to_thread(pool.remove)
