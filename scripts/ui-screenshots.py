"""Take the screenshots of the run page in docs/ from a live cluster.

Needs: the chart installed, examples/k8s/ml-inference.yaml applied, ServiceAccount
`tether-ui` bound to `tether-view` (README, *Watch a run live*), `tether ui --server kube
--no-open` running on port 8233, and Debian's chromium. It starts an ML run whose
predictions take 0.15 s each, deletes the session's pod partway through, and captures
the run's page after the run ends, then the runs list and the workers page.

    .venv/bin/python scripts/ui-screenshots.py [BASE_URL]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from playwright.sync_api import sync_playwright

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8233"
RUN = {
    "apiVersion": "tether.dev/v1alpha1",
    "kind": "WorkflowRun",
    "metadata": {"generateName": "ml-inference-"},
    "spec": {
        "workflowRef": {"name": "ml-inference"},
        "input": {"batch": [{"x": i} for i in range(40)]},
    },
}


def kubectl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def main() -> None:
    kubectl("patch", "wp", "ml-inference", "--type=json", "-p", json.dumps([{
        "op": "add", "path": "/spec/template/spec/containers/0/env",
        "value": [{"name": "TETHER_EXAMPLE_PREDICT_SECONDS", "value": "0.15"}],
    }]))  # fmt: skip
    kubectl("delete", "pods", "-l", "tether.dev/pool=ml-inference", "--wait=true")
    kubectl("wait", "--for=condition=Ready", "pods", "-l", "tether.dev/pool=ml-inference",
            "--timeout=120s")  # fmt: skip
    time.sleep(3)  # the new workers register
    token = kubectl("create", "token", "tether-ui", "--audience", "tether.dev/scheduler")
    name = kubectl("create", "-f", "-", "-o", "jsonpath={.metadata.name}", stdin=json.dumps(RUN))
    namespace = kubectl("config", "view", "--minify", "-o", "jsonpath={..namespace}")
    run_id = f"{namespace or 'default'}.{name}"
    chromium = shutil.which("chromium") or "chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 860})
        tab.goto(f"{BASE}/ui/#token={token}&to=/runs/{run_id}")
        bound = tab.wait_for_selector("svg.gantt [data-binding-pod]", timeout=60_000)
        assert bound is not None
        pod = bound.get_attribute("data-binding-pod") or ""
        tab.wait_for_function("() => document.querySelectorAll('svg.gantt g[data-seq]').length > 9")
        kubectl("delete", "pod", pod, "--wait=false")
        tab.wait_for_selector("h1 [data-phase=Succeeded]", timeout=120_000)
        tab.screenshot(path="docs/ui-run.png", full_page=False)
        tab.goto(f"{BASE}/ui/#/runs")
        tab.wait_for_selector("table[data-table=runs]")
        tab.screenshot(path="docs/ui-runs.png")
        tab.goto(f"{BASE}/ui/#/workers")
        tab.wait_for_selector("table[data-table=workers]")
        tab.screenshot(path="docs/ui-workers.png")
        browser.close()
    print(f"docs/ui-run.png: run {run_id}, session pod {pod} deleted mid-run")


if __name__ == "__main__":
    main()
