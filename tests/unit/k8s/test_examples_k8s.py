"""examples/k8s/: a WorkerPool + Workflow manifest and a run manifest for every example,
valid against the resource models, serving what the example's code registers, with run
inputs that produce the results the e2e tests expect."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.e2e.test_examples_k8s import EXPECTED
from tether_operator.engine import Schedule
from tether_operator.k8s.resources.specs import (
    WorkerPool,
    Workflow,
    WorkflowRun,
    WorkflowSchedule,
)
from worker_runtime.loader import discover_all
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import get_definition

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
K8S = EXAMPLES / "k8s"
MODELS: dict[str, type[WorkerPool | Workflow | WorkflowRun | WorkflowSchedule]] = {
    "WorkerPool": WorkerPool,
    "Workflow": Workflow,
    "WorkflowRun": WorkflowRun,
    "WorkflowSchedule": WorkflowSchedule,
}
SCRIPTS = {path.stem.replace("_", "-"): path for path in EXAMPLES.glob("*.py")}
MANIFESTS = sorted(p.name.removesuffix("-run.yaml") for p in K8S.glob("*-run.yaml"))


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def parsed(name: str) -> dict[str, list[Any]]:
    """The objects of examples/k8s/NAME, validated by their models, by kind."""
    by_kind: dict[str, list[Any]] = {}
    for doc in documents(name):
        model = MODELS.get(doc["kind"])
        by_kind.setdefault(doc["kind"], []).append(model.model_validate(doc) if model else doc)
    return by_kind


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"k8s_example_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source(name: str, tmp_path: Path) -> Path:
    """The Python file the pool of examples/k8s/NAME.yaml serves."""
    if name in SCRIPTS:
        return SCRIPTS[name]
    (configmap,) = parsed(f"{name}.yaml")["ConfigMap"]
    ((filename, text),) = configmap["data"].items()
    path = tmp_path / filename
    path.write_text(text)
    return path


def test_every_example_has_its_two_manifests() -> None:
    for name in SCRIPTS:
        assert (K8S / f"{name}.yaml").is_file(), f"examples/k8s/{name}.yaml is missing"
        assert (K8S / f"{name}-run.yaml").is_file(), f"examples/k8s/{name}-run.yaml is missing"
    assert sorted(EXPECTED) == MANIFESTS, "the e2e tests expect a result of every run"
    assert {p.name for p in K8S.glob("*.yaml")} == {
        f"{name}{suffix}" for name in MANIFESTS for suffix in (".yaml", "-run.yaml")
    }


def test_readme_shows_the_user_path_and_the_configmap_worker_in_full() -> None:
    readme = (REPO / "README.md").read_text()
    assert f"```yaml\n{(K8S / 'configmap-worker.yaml').read_text()}```" in readme
    for command in (
        "helm install tether charts/tether -n tether-system --create-namespace --wait",
        "kubectl apply -f examples/k8s/ml-inference.yaml",
        "kubectl create -f examples/k8s/ml-inference-run.yaml",
        "kubectl get workflowruns",
        "kubectl wait --for=condition=Succeeded wfr/NAME --timeout=120s",
        "kubectl get wfr NAME -o jsonpath='{.status.result}'",
        "helm uninstall tether -n tether-system",
        "make demo",
        "make test",
    ):
        assert command in readme


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_parse_and_serve_what_the_code_registers(name: str, tmp_path: Path) -> None:
    objects = parsed(f"{name}.yaml")
    (pool,) = objects["WorkerPool"]
    (container,) = pool.spec.template.spec.containers
    extra = container.model_extra or {}
    path = source(name, tmp_path)
    assert extra["image"] == "tether:dev"
    assert extra["imagePullPolicy"] == "IfNotPresent"
    assert extra["command"][:3] == ["python", "-m", "worker_runtime"]
    if name in SCRIPTS:
        assert extra["command"][3] == f"/app/examples/{path.name}", "the image's copy"
    else:
        assert extra["command"][3].endswith(f"/{path.name}"), "the ConfigMap's file"

    workflows, _ = discover_all(load(path))
    registered = {get_definition(w).name for w in workflows}
    declared = {w.metadata.name for w in objects["Workflow"]}
    assert declared == registered, "one Workflow per workflow the worker registers"
    assert {w.spec.worker_pool for w in objects["Workflow"]} == {pool.metadata.name}

    (run,) = parsed(f"{name}-run.yaml")["WorkflowRun"]
    assert run.metadata.name is None
    assert (run.metadata.model_extra or {})["generateName"].startswith(run.spec.workflow_ref.name)
    assert run.spec.workflow_ref.name in declared


@pytest.mark.parametrize("name", MANIFESTS)
async def test_run_input_gives_the_expected_result(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_EXAMPLE_LOAD_SECONDS", "0.01")
    workflows, _ = discover_all(load(source(name, tmp_path)))
    (run,) = parsed(f"{name}-run.yaml")["WorkflowRun"]
    async with WorkflowEnvironment(workflows=workflows, workers=2) as env:
        result = await env.execute(run.spec.workflow_ref.name, run.spec.input, timeout=30)
    assert EXPECTED[name](result), f"{name}-run.yaml returned {result!r}"


def test_the_image_holds_the_examples_the_manifests_run() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY examples /app/examples" in dockerfile
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not ignored & {"examples", "examples/*", "build", "build/wheels"}, (
        ".dockerignore must not exclude what the image copies"
    )


def test_the_nightly_report_schedule_names_its_workflow_and_a_usable_time() -> None:
    (schedule,) = parsed("nightly-report.yaml")["WorkflowSchedule"]
    assert schedule.spec.workflow_ref.name == "nightly-report"
    assert schedule.spec.concurrency_policy == "Forbid"
    Schedule.parse(schedule.spec.schedules, schedule.spec.time_zone)
