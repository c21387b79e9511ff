"""The Helm chart (charts/tether): its CRDs in sync with crds/, `helm lint --strict`
clean, and what `helm template` renders — secure defaults, least-privilege RBAC
resource by resource, values checked by values.schema.json."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tether_operator.k8s.resources.specs import WorkerPool

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "tether"
CRDS = REPO / "crds"

Obj = dict[str, Any]


def _helm() -> str:
    """helm from PATH, else from the tools `hack/kind-up env` puts on PATH."""
    found = shutil.which("helm")
    if found is None:
        exports = subprocess.run(
            [str(REPO / "hack" / "kind-up"), "env"], capture_output=True, text=True, check=True
        ).stdout
        for line in exports.splitlines():
            if line.startswith("export PATH="):
                tools = line.removeprefix("export PATH=").rsplit(":", 1)[0]
                found = shutil.which("helm", path=tools)
    if found is None:
        pytest.fail('helm is not on PATH: eval "$(hack/kind-up env)"', pytrace=False)
    return found


HELM = _helm()


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=False, timeout=60)


def render(*sets: str, namespace: str = "tether-system") -> list[Obj]:
    """`helm template tether charts/tether` with `--set` ``sets`` (one starting with `--`
    is passed as it is, e.g. `--api-versions=...`): the objects."""
    args = ["template", "tether", str(CHART), "--namespace", namespace]
    for value in sets:
        args += [value] if value.startswith("--") else ["--set", value]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    (found,) = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    return found


def rules(role: Obj) -> dict[tuple[str, str], set[str]]:
    """A role's rules as {(apiGroup, resource): verbs}."""
    found: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


def test_chart_crds_are_a_copy_of_crds() -> None:
    committed = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    copied = {p.name: p.read_text() for p in (CHART / "files" / "crds").glob("*.yaml")}
    stale = sorted(n for n in committed.keys() | copied.keys() if committed.get(n) != copied.get(n))
    assert not stale, (
        f"charts/tether/files/crds is stale ({', '.join(stale)}): run `make crds` and commit it"
    )


def test_helm_lint_strict_is_clean() -> None:
    done = helm("lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout
    assert "[ERROR]" not in done.stdout


def test_default_install_renders_every_part_with_the_recommended_labels() -> None:
    objects = render()
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("ClusterRole", "tether"),
        ("ClusterRole", "tether-cluster"),
        ("ClusterRole", "tether-edit"),
        ("ClusterRole", "tether-view"),
        ("ClusterRoleBinding", "tether"),
        ("ClusterRoleBinding", "tether-cluster"),
        ("CustomResourceDefinition", "workerpools.tether.dev"),
        ("CustomResourceDefinition", "workflowruns.tether.dev"),
        ("CustomResourceDefinition", "workflows.tether.dev"),
        ("CustomResourceDefinition", "workflowschedules.tether.dev"),
        ("Deployment", "tether"),
        ("PodDisruptionBudget", "tether"),
        ("Role", "tether-leader-election"),
        ("RoleBinding", "tether-leader-election"),
        ("Service", "tether"),
        ("ServiceAccount", "tether"),
    ]
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "tether"
        assert labels["app.kubernetes.io/instance"] == "tether"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"]
        assert labels["helm.sh/chart"].startswith("tether-")


def test_crds_are_the_generated_ones_and_kept_on_uninstall() -> None:
    generated = {
        doc["metadata"]["name"]: doc
        for path in CRDS.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
    }
    rendered = [o for o in render() if o["kind"] == "CustomResourceDefinition"]
    assert {crd["metadata"]["name"] for crd in rendered} == set(generated)
    for crd in rendered:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["spec"] == generated[crd["metadata"]["name"]]["spec"]
    assert not [o for o in render("crds.install=false") if o["kind"] == "CustomResourceDefinition"]


def test_operator_runs_with_secure_defaults_probes_and_resources() -> None:
    deployment = one(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tether"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp"
    assert "emptyDir" in pod["volumes"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz?standby=true",
        "port": "http",
    }
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert container["image"] == "tether:dev"
    assert container["args"][0] == "operator"
    assert container["ports"] == [
        {"name": "http", "containerPort": 7233, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert "--metrics-port=9090" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TETHER_SCHEDULER_URL"]["value"] == "http://tether.tether-system.svc:7233"
    assert env["TETHER_WATCH_NAMESPACES"]["value"] == ""
    assert env["TETHER_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    assert env["TETHER_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["TETHER_LEADER_ELECT"]["value"] == "true"
    assert env["TETHER_LEASE_NAME"]["value"] == "tether"
    assert [env[f"TETHER_LEASE_{k}"]["value"] for k in ("DURATION", "RENEW_DEADLINE")] == [
        "15",
        "10",
    ]
    assert env["TETHER_LEASE_RETRY_PERIOD"]["value"] == "2"
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_without_leader_election_one_operator_is_recreated() -> None:
    objects = render("operator.replicas=1", "operator.leaderElection.enabled=false")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TETHER_LEADER_ELECT"]["value"] == "false"
    assert "tether.dev/leader" not in one(objects, "Service")["spec"]["selector"]
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]


def test_two_replicas_without_leader_election_are_refused() -> None:
    done = helm("template", "tether", str(CHART), "--set", "operator.leaderElection.enabled=false")
    assert done.returncode != 0
    assert "operator.replicas > 1 needs operator.leaderElection.enabled=true" in done.stderr
    done = helm(
        "template",
        "tether",
        str(CHART),
        "--set",
        "operator.leaderElection.renewDeadlineSeconds=15",
    )
    assert "renewDeadlineSeconds must be less than leaseDurationSeconds" in done.stderr


def test_service_exposes_the_scheduler_port_of_the_operator_pod() -> None:
    objects = render()
    service = one(objects, "Service")
    selector = dict(service["spec"]["selector"])
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    # The leader sets this label on its own pod: the Service reaches only the leader.
    assert selector.pop("tether.dev/leader") == "true"
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 7233, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
    ]


def test_rbac_grants_the_operator_exactly_what_it_does() -> None:
    objects = render()
    assert rules(one(objects, "ClusterRole", "tether")) == {
        ("tether.dev", "workflowruns"): {
            "get",
            "list",
            "watch",
            "create",
            "patch",
            "update",
            "delete",
        },
        ("tether.dev", "workflowruns/status"): {"get", "patch", "update"},
        ("tether.dev", "workflows"): {"get", "list", "watch", "create", "patch"},
        ("tether.dev", "workflows/status"): {"get", "patch", "update"},
        ("tether.dev", "workerpools"): {"get", "list", "watch", "patch"},
        ("tether.dev", "workerpools/status"): {"get", "patch", "update"},
        ("tether.dev", "workerpools/scale"): {"get"},
        ("tether.dev", "workflowschedules"): {"get", "list", "watch", "patch"},
        ("tether.dev", "workflowschedules/status"): {"get", "patch", "update"},
        ("", "pods"): {"get", "list", "watch", "create", "delete", "patch"},
        ("", "configmaps"): {"get", "list", "watch", "create", "update", "patch", "delete"},
        ("", "events"): {"create", "patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
    }
    assert rules(one(objects, "ClusterRole", "tether-cluster")) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
        ("", "namespaces"): {"list", "watch"},
        ("authentication.k8s.io", "tokenreviews"): {"create"},
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
        ("", "nodes"): {"get", "list", "watch"},
    }
    lease = one(objects, "Role")
    assert lease["metadata"]["namespace"] == "tether-system"
    assert rules(lease) == {
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
        ("", "pods"): {"get", "patch"},
        ("", "events"): {"create", "patch"},
    }
    for binding in [o for o in objects if o["kind"].endswith("Binding")]:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "tether", "namespace": "tether-system"}
        ]


def test_auth_is_on_by_default_and_off_drops_the_review_permissions() -> None:
    env = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TETHER_AUTH", "value": "tokenreview"} in env
    objects = render("auth.enabled=false")
    env = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TETHER_AUTH", "value": "none"} in env
    assert rules(one(objects, "ClusterRole", "tether-cluster")) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
        ("", "namespaces"): {"list", "watch"},
        ("", "nodes"): {"get", "list", "watch"},
    }


def test_the_network_policy_is_opt_in_and_admits_workers_and_the_api_server() -> None:
    assert not [o for o in render() if o["kind"] == "NetworkPolicy"]
    objects = render(
        "networkPolicy.enabled=true",
        "networkPolicy.apiServerCIDRs={172.30.0.0/16,10.96.0.1/32}",
        "networkPolicy.extraFrom[0].namespaceSelector.matchLabels.team=ops",
    )
    policy = one(objects, "NetworkPolicy")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchExpressions": [{"key": "tether.dev/pool", "operator": "Exists"}]},
        },
        {"ipBlock": {"cidr": "172.30.0.0/16"}},
        {"ipBlock": {"cidr": "10.96.0.1/32"}},
        {"namespaceSelector": {"matchLabels": {"team": "ops"}}},
    ]
    done = helm(
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServerCIDRs={10.0.0.0/8}",
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_watch_namespaces_binds_the_operator_only_there() -> None:
    objects = render("watchNamespaces={team-a,team-b}")
    cluster_bindings = [o["metadata"]["name"] for o in objects if o["kind"] == "ClusterRoleBinding"]
    assert cluster_bindings == ["tether-cluster"], "only the cluster-scoped reads"
    bindings = {
        o["metadata"]["namespace"]: o["roleRef"]
        for o in objects
        if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "tether"
    }
    assert bindings == {
        ns: {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tether"}
        for ns in ("team-a", "team-b")
    }
    env = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TETHER_WATCH_NAMESPACES", "value": "team-a,team-b"} in env


def test_names_follow_the_release_and_the_scheduler_url_its_service() -> None:
    objects = render(namespace="ops")
    assert one(objects, "Service")["metadata"]["name"] == "tether"
    other = render("fullnameOverride=wf-engine", namespace="ops")
    env = one(other, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TETHER_SCHEDULER_URL", "value": "http://wf-engine.ops.svc:7233"} in env


def test_worker_pools_from_values_are_valid_worker_pools() -> None:
    objects = render(
        "workerPools[0].name=gpu",
        "workerPools[0].spec.replicas=2",
        "workerPools[0].spec.template.spec.containers[0].name=worker",
        "workerPools[0].spec.template.spec.containers[0].image=tether:dev",
        "workerPools[1].name=cpu",
        "workerPools[1].namespace=team-a",
        "workerPools[1].spec.template.spec.containers[0].name=worker",
    )
    pools = [WorkerPool.model_validate(o) for o in objects if o["kind"] == "WorkerPool"]
    assert [(p.metadata.name, p.metadata.namespace, p.spec.replicas) for p in pools] == [
        ("gpu", "tether-system", 2),
        ("cpu", "team-a", 1),
    ]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("imag.tag=x", "additional properties 'imag' not allowed"),
        ("operator.logLevl=DEBUG", "at '/operator': additional properties 'logLevl'"),
        ("operator.logLevel=LOUD", "at '/operator/logLevel': value must be one of"),
        ("watchNamespaces={Team_A}", "at '/watchNamespaces/0': 'Team_A' does not match"),
        ("workerPools[0].name=gpu", "at '/workerPools/0': missing property 'spec'"),
        ("service.port=0", "at '/service/port': minimum"),
        ("auth.enabled=maybe", "at '/auth/enabled': got string, want boolean"),
        ("networkPolicy.apiServerCIDRs={10.0.0.1}", "at '/networkPolicy/apiServerCIDRs/0'"),
    ],
)
def test_values_schema_refuses_typos_and_bad_values(value: str, error: str) -> None:
    done = helm("template", "tether", str(CHART), "--set", value)
    assert done.returncode != 0
    assert error in done.stderr, done.stderr


def test_notes_tell_the_user_what_to_run_next() -> None:
    done = helm("install", "tether", str(CHART), "--dry-run=client", "-n", "tether-system")
    assert done.returncode == 0, done.stderr
    notes = done.stdout.partition("NOTES:")[2]
    assert "kubectl -n tether-system rollout status deployment/tether" in notes
    assert "kubectl apply -f examples/k8s/ml-inference.yaml" in notes
    assert "kubectl create -f examples/k8s/ml-inference-run.yaml" in notes
    assert "kubectl wait --for=condition=Succeeded wfr/NAME" in notes
    assert "http://tether.tether-system.svc:7233" in notes
    # Logs of the leader, not of whichever replica `deployment/` picks.
    assert "logs -l app.kubernetes.io/instance=tether,tether.dev/leader=true" in notes
    assert "logs deployment/" not in notes
