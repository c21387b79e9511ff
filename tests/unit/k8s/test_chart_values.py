"""Every value of charts/tether/values.yaml changes what the chart renders the way its
comment says: one check per value, and a test that no value is left without one.

What the operator does with the values it reads (log level, leases, namespaces, auth)
is shown on the cluster by the e2e tests named in docs/install.md; here the chart
passes each one through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.unit.k8s.test_chart import CHART, Obj, one, render

Check = Callable[[list[Obj]], Any]


def deployment(objects: list[Obj]) -> Obj:
    return one(objects, "Deployment")


def pod(objects: list[Obj]) -> Obj:
    spec: Obj = deployment(objects)["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj]) -> Obj:
    found: Obj = pod(objects)["containers"][0]
    return found


def env(objects: list[Obj]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


def kinds(objects: list[Obj]) -> set[str]:
    return {o["kind"] for o in objects}


def bindings_subjects(objects: list[Obj]) -> list[Obj]:
    return [s for o in objects if o["kind"].endswith("Binding") for s in o["subjects"]]


MONITORING = "--api-versions=" + ",".join(
    f"monitoring.coreos.com/v1/{kind}"
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
)
"""A cluster that serves the Prometheus Operator's resources (helm's capabilities)."""


def alerts(objects: list[Obj]) -> set[str]:
    return {
        r["alert"] for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]
    }


def dashboard(objects: list[Obj]) -> Obj:
    return one(objects, "ConfigMap", "tether-dashboard")


POSTGRES = ["store.type=postgres", "store.postgres.existingSecret=db"]
EMBEDDED = ["store.type=postgres", "store.postgres.embedded.enabled=true"]


def postgres(objects: list[Obj]) -> Obj:
    spec: Obj = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def claim(objects: list[Obj]) -> Obj:
    spec: Obj = one(objects, "StatefulSet")["spec"]["volumeClaimTemplates"][0]["spec"]
    return spec


VALUES: dict[str, tuple[list[str], Check]] = {
    "nameOverride": (
        ["nameOverride=engine"],
        lambda o: (
            deployment(o)["metadata"]["name"] == "tether-engine"
            and deployment(o)["metadata"]["labels"]["app.kubernetes.io/name"] == "engine"
        ),
    ),
    "fullnameOverride": (
        ["fullnameOverride=wf-engine"],
        lambda o: (
            {x["metadata"]["name"] for x in o if x["kind"] in ("Deployment", "Service")}
            == {"wf-engine"}
        ),
    ),
    "image.repository": (
        ["image.repository=registry.local/tether"],
        lambda o: container(o)["image"] == "registry.local/tether:dev",
    ),
    "image.tag": (["image.tag=v9"], lambda o: container(o)["image"] == "tether:v9"),
    "image.pullPolicy": (
        ["image.pullPolicy=Always"],
        lambda o: container(o)["imagePullPolicy"] == "Always",
    ),
    "imagePullSecrets": (
        ["imagePullSecrets[0].name=regcred"],
        lambda o: pod(o)["imagePullSecrets"] == [{"name": "regcred"}],
    ),
    "crds.install": (
        ["crds.install=false"],
        lambda o: "CustomResourceDefinition" not in kinds(o),
    ),
    "watchNamespaces": (
        ["watchNamespaces={team-a}"],
        lambda o: env(o)["TETHER_WATCH_NAMESPACES"] == "team-a",
    ),
    "schedulerUrl": (
        ["schedulerUrl=http://tether.example:9000"],
        lambda o: env(o)["TETHER_SCHEDULER_URL"] == "http://tether.example:9000",
    ),
    "metrics.enabled": (
        ["metrics.enabled=false"],
        lambda o: (
            "--metrics-port=0" in container(o)["args"]
            and [p["name"] for p in container(o)["ports"]] == ["http"]
            and [p["name"] for p in one(o, "Service")["spec"]["ports"]] == ["http"]
        ),
    ),
    "metrics.port": (
        ["metrics.port=9100"],
        lambda o: (
            "--metrics-port=9100" in container(o)["args"]
            and {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}
            in container(o)["ports"]
            and one(o, "Service")["spec"]["ports"][1]["port"] == 9100
        ),
    ),
    "metrics.allowFrom": (
        [
            "networkPolicy.enabled=true",
            "metrics.allowFrom[0].namespaceSelector.matchLabels.team=obs",
        ],
        lambda o: (
            one(o, "NetworkPolicy")["spec"]["ingress"][1]
            == {
                "ports": [{"port": "metrics", "protocol": "TCP"}],
                "from": [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}],
            }
        ),
    ),
    "metrics.serviceMonitor.enabled": (
        ["metrics.serviceMonitor.enabled=true", MONITORING],
        lambda o: one(o, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics",
    ),
    "metrics.serviceMonitor.interval": (
        ["metrics.serviceMonitor.enabled=true", MONITORING, "metrics.serviceMonitor.interval=10s"],
        lambda o: one(o, "ServiceMonitor")["spec"]["endpoints"][0]["interval"] == "10s",
    ),
    "metrics.serviceMonitor.labels": (
        [
            "metrics.serviceMonitor.enabled=true",
            MONITORING,
            "metrics.serviceMonitor.labels.release=prom",
        ],
        lambda o: one(o, "ServiceMonitor")["metadata"]["labels"]["release"] == "prom",
    ),
    "metrics.podMonitor.enabled": (
        ["metrics.podMonitor.enabled=true", MONITORING],
        lambda o: (
            one(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "tether-metrics"
        ),
    ),
    "metrics.podMonitor.interval": (
        ["metrics.podMonitor.enabled=true", MONITORING, "metrics.podMonitor.interval=15s"],
        lambda o: one(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["interval"] == "15s",
    ),
    "metrics.podMonitor.labels": (
        ["metrics.podMonitor.enabled=true", MONITORING, "metrics.podMonitor.labels.release=prom"],
        lambda o: one(o, "PodMonitor")["metadata"]["labels"]["release"] == "prom",
    ),
    "metrics.prometheusRule.enabled": (
        ["metrics.prometheusRule.enabled=true", MONITORING],
        lambda o: "TetherNoLeader" in alerts(o),
    ),
    "metrics.prometheusRule.labels": (
        [
            "metrics.prometheusRule.enabled=true",
            MONITORING,
            "metrics.prometheusRule.labels.role=alert",
        ],
        lambda o: one(o, "PrometheusRule")["metadata"]["labels"]["role"] == "alert",
    ),
    "metrics.grafanaDashboard.enabled": (
        ["metrics.grafanaDashboard.enabled=true"],
        lambda o: json.loads(dashboard(o)["data"]["tether.json"])["uid"] == "tether-overview",
    ),
    "metrics.grafanaDashboard.namespace": (
        ["metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.namespace=grafana"],
        lambda o: dashboard(o)["metadata"]["namespace"] == "grafana",
    ),
    "metrics.grafanaDashboard.labels": (
        ["metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.labels.team=obs"],
        lambda o: dashboard(o)["metadata"]["labels"]["team"] == "obs",
    ),
    "operator.replicas": (
        ["operator.replicas=3"],
        lambda o: deployment(o)["spec"]["replicas"] == 3,
    ),
    "operator.leaderElection.enabled": (
        ["operator.replicas=1", "operator.leaderElection.enabled=false"],
        lambda o: env(o)["TETHER_LEADER_ELECT"] == "false",
    ),
    "operator.leaderElection.leaseDurationSeconds": (
        ["operator.leaderElection.leaseDurationSeconds=30"],
        lambda o: env(o)["TETHER_LEASE_DURATION"] == "30",
    ),
    "operator.leaderElection.renewDeadlineSeconds": (
        ["operator.leaderElection.renewDeadlineSeconds=7"],
        lambda o: env(o)["TETHER_LEASE_RENEW_DEADLINE"] == "7",
    ),
    "operator.leaderElection.retryPeriodSeconds": (
        ["operator.leaderElection.retryPeriodSeconds=1"],
        lambda o: env(o)["TETHER_LEASE_RETRY_PERIOD"] == "1",
    ),
    "operator.podDisruptionBudget.enabled": (
        ["operator.podDisruptionBudget.enabled=false"],
        lambda o: "PodDisruptionBudget" not in kinds(o),
    ),
    "operator.logLevel": (
        ["operator.logLevel=DEBUG"],
        lambda o: "--log-level=DEBUG" in container(o)["args"],
    ),
    "operator.logFormat": (
        ["operator.logFormat=json"],
        lambda o: "--log-format=json" in container(o)["args"],
    ),
    "operator.extraEnv": (
        ["operator.extraEnv[0].name=HTTPS_PROXY", "operator.extraEnv[0].value=http://proxy:3128"],
        lambda o: env(o)["HTTPS_PROXY"] == "http://proxy:3128",
    ),
    "operator.resources": (
        ["operator.resources.limits.memory=2Gi"],
        lambda o: container(o)["resources"]["limits"]["memory"] == "2Gi",
    ),
    "operator.podLabels": (
        ["operator.podLabels.team=ml"],
        lambda o: deployment(o)["spec"]["template"]["metadata"]["labels"]["team"] == "ml",
    ),
    "operator.podAnnotations": (
        ["operator.podAnnotations.note=hello"],
        lambda o: deployment(o)["spec"]["template"]["metadata"]["annotations"]["note"] == "hello",
    ),
    "operator.nodeSelector": (
        ["operator.nodeSelector.topology\\.kubernetes\\.io/zone=zone-a"],
        lambda o: pod(o)["nodeSelector"] == {"topology.kubernetes.io/zone": "zone-a"},
    ),
    "operator.tolerations": (
        ["operator.tolerations[0].key=dedicated", "operator.tolerations[0].operator=Exists"],
        lambda o: pod(o)["tolerations"] == [{"key": "dedicated", "operator": "Exists"}],
    ),
    "operator.affinity": (
        [
            "operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].key=zone",
            "operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        ],
        lambda o: "nodeAffinity" in pod(o)["affinity"],
    ),
    "operator.priorityClassName": (
        ["operator.priorityClassName=critical"],
        lambda o: pod(o)["priorityClassName"] == "critical",
    ),
    "operator.terminationGracePeriodSeconds": (
        ["operator.terminationGracePeriodSeconds=90"],
        lambda o: pod(o)["terminationGracePeriodSeconds"] == 90,
    ),
    "operator.podSecurityContext": (
        ["operator.podSecurityContext.runAsUser=1234"],
        lambda o: pod(o)["securityContext"]["runAsUser"] == 1234,
    ),
    "operator.securityContext": (
        ["operator.securityContext.readOnlyRootFilesystem=false"],
        lambda o: container(o)["securityContext"]["readOnlyRootFilesystem"] is False,
    ),
    "operator.livenessProbe": (
        ["operator.livenessProbe.periodSeconds=20"],
        lambda o: container(o)["livenessProbe"]["periodSeconds"] == 20,
    ),
    "operator.readinessProbe": (
        ["operator.readinessProbe.periodSeconds=5"],
        lambda o: container(o)["readinessProbe"]["periodSeconds"] == 5,
    ),
    "serviceAccount.create": (
        ["serviceAccount.create=false", "serviceAccount.name=platform-sa"],
        lambda o: (
            "ServiceAccount" not in kinds(o)
            and pod(o)["serviceAccountName"] == "platform-sa"
            and {s["name"] for s in bindings_subjects(o)} == {"platform-sa"}
        ),
    ),
    "serviceAccount.name": (
        ["serviceAccount.name=engine-sa"],
        lambda o: (
            one(o, "ServiceAccount")["metadata"]["name"] == "engine-sa"
            and pod(o)["serviceAccountName"] == "engine-sa"
        ),
    ),
    "serviceAccount.annotations": (
        ["serviceAccount.annotations.owner=platform"],
        lambda o: one(o, "ServiceAccount")["metadata"]["annotations"] == {"owner": "platform"},
    ),
    "rbac.create": (
        ["rbac.create=false", "rbac.userRoles=false"],
        lambda o: not kinds(o) & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"},
    ),
    "rbac.userRoles": (
        ["rbac.userRoles=false"],
        lambda o: (
            not {"tether-view", "tether-edit"}
            & {x["metadata"]["name"] for x in o if x["kind"] == "ClusterRole"}
        ),
    ),
    "service.type": (
        ["service.type=NodePort"],
        lambda o: one(o, "Service")["spec"]["type"] == "NodePort",
    ),
    "service.port": (
        ["service.port=8080"],
        lambda o: (
            one(o, "Service")["spec"]["ports"][0]["port"] == 8080
            and env(o)["TETHER_SCHEDULER_URL"] == "http://tether.tether-system.svc:8080"
        ),
    ),
    "store.type": (
        ["store.type=postgres", "store.postgres.existingSecret=db"],
        lambda o: env(o)["TETHER_STORE"] == "postgres",
    ),
    "store.postgres.existingSecret": (
        ["store.type=postgres", "store.postgres.existingSecret=db"],
        lambda o: env(o)["TETHER_STORE_DSN"] == {"secretKeyRef": {"name": "db", "key": "dsn"}},
    ),
    "store.postgres.dsnKey": (
        [
            "store.type=postgres",
            "store.postgres.existingSecret=pg-app",
            "store.postgres.dsnKey=uri",
        ],
        lambda o: env(o)["TETHER_STORE_DSN"]["secretKeyRef"]["key"] == "uri",
    ),
    "store.postgres.caSecret": (
        [*POSTGRES, "store.postgres.caSecret=db-ca"],
        lambda o: (
            {
                "name": "postgres-ca",
                "secret": {"secretName": "db-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
            }
            in pod(o)["volumes"]
            and {"name": "postgres-ca", "mountPath": "/etc/tether/postgres-ca", "readOnly": True}
            in container(o)["volumeMounts"]
        ),
    ),
    "store.postgres.embedded.enabled": (
        ["store.type=postgres", "store.postgres.embedded.enabled=true"],
        lambda o: (
            one(o, "StatefulSet")["metadata"]["name"] == "tether-postgres"
            and env(o)["TETHER_STORE_DSN"]["secretKeyRef"]
            == {"name": "tether-postgres", "key": "dsn"}
            and one(o, "Secret")["stringData"]["dsn"].endswith(
                "@tether-postgres.tether-system.svc:5432/tether"
            )
        ),
    ),
    "store.postgres.embedded.image": (
        [*EMBEDDED, "store.postgres.embedded.image=pg:17"],
        lambda o: postgres(o)["containers"][0]["image"] == "pg:17",
    ),
    "store.postgres.embedded.storage": (
        [*EMBEDDED, "store.postgres.embedded.storage=20Gi"],
        lambda o: claim(o)["resources"]["requests"]["storage"] == "20Gi",
    ),
    "store.postgres.embedded.nodeSelector": (
        [*EMBEDDED, "store.postgres.embedded.nodeSelector.disk=ssd"],
        lambda o: postgres(o)["nodeSelector"] == {"disk": "ssd"},
    ),
    "store.postgres.embedded.storageClassName": (
        [*EMBEDDED, "store.postgres.embedded.storageClassName=fast"],
        lambda o: claim(o)["storageClassName"] == "fast",
    ),
    "auth.enabled": (["auth.enabled=false"], lambda o: env(o)["TETHER_AUTH"] == "none"),
    "networkPolicy.enabled": (
        ["networkPolicy.enabled=true"],
        lambda o: "NetworkPolicy" in kinds(o),
    ),
    "networkPolicy.apiServerCIDRs": (
        ["networkPolicy.enabled=true", "networkPolicy.apiServerCIDRs={10.0.0.0/8}"],
        lambda o: (
            {"ipBlock": {"cidr": "10.0.0.0/8"}}
            in one(o, "NetworkPolicy")["spec"]["ingress"][0]["from"]
        ),
    ),
    "networkPolicy.extraFrom": (
        ["networkPolicy.enabled=true", "networkPolicy.extraFrom[0].podSelector.matchLabels.a=b"],
        lambda o: (
            {"podSelector": {"matchLabels": {"a": "b"}}}
            in one(o, "NetworkPolicy")["spec"]["ingress"][0]["from"]
        ),
    ),
    "workerPools": (
        ["workerPools[0].name=gpu", "workerPools[0].spec.template.spec.containers[0].name=w"],
        lambda o: one(o, "WorkerPool")["metadata"]["name"] == "gpu",
    ),
}
"""Value -> (--set arguments, a check of the rendered objects that holds only with them)."""

WHOLE = {
    "operator.resources",
    "operator.podLabels",
    "operator.podAnnotations",
    "operator.nodeSelector",
    "operator.affinity",
    "operator.podSecurityContext",
    "operator.securityContext",
    "operator.livenessProbe",
    "operator.readinessProbe",
    "serviceAccount.annotations",
    "metrics.grafanaDashboard.labels",
}
"""Values that are one Kubernetes object each (a resources block, a probe): one check each."""


def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in WHOLE:
            yield from leaves(value, f"{path}.")
        else:
            yield path


def test_every_value_has_a_check() -> None:
    declared = set(leaves(yaml.safe_load((CHART / "values.yaml").read_text())))
    assert declared == set(VALUES), (
        f"values without a check: {sorted(declared - set(VALUES))}; "
        f"checks of no value: {sorted(set(VALUES) - declared)}"
    )


def holds(check: Check, objects: list[Obj]) -> bool:
    """Whether ``check`` holds; a missing field or object means it does not."""
    try:
        return bool(check(objects))
    except (KeyError, ValueError, IndexError):
        return False


@pytest.mark.parametrize("value", sorted(VALUES))
def test_the_value_acts(value: str) -> None:
    sets, check = VALUES[value]
    assert not holds(check, render()), f"{value}: the check already holds with the defaults"
    assert check(render(*sets)), f"{value}: {sets} did not change what the chart renders"
