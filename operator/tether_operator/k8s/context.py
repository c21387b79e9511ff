"""What the operator runs with: its settings, and the context each controller's
`setup(registry, context)` is handed (the controller seam; see `operator.py`)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import kopf

from tether_operator.k8s.api.client import KubeClient
from tether_operator.k8s.api.events import EventRecorder
from tether_operator.k8s.pool_health import PoolHealth
from tether_operator.scheduler.service import SchedulerService

__all__ = ["AUTH_KINDS", "AuthKind", "OperatorContext", "OperatorSettings", "Setup", "StoreKind"]

StoreKind = Literal["kubernetes", "memory", "postgres"]
AuthKind = Literal["tokenreview", "none"]
AUTH_KINDS: tuple[AuthKind, ...] = ("tokenreview", "none")


def _env_auth() -> AuthKind:
    value = os.environ.get("TETHER_AUTH", "") or "tokenreview"
    for kind in AUTH_KINDS:
        if value == kind:
            return kind
    raise ValueError(f"TETHER_AUTH={value!r}: use one of {', '.join(AUTH_KINDS)}")


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, "").split(",") if part.strip())


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class OperatorSettings:
    """How the operator runs (flags of `tether operator`, else the environment)."""

    host: str = "0.0.0.0"
    """Address the scheduler's HTTP API listens on."""
    port: int = 7233
    """Port of the scheduler's HTTP API (the Service port)."""
    metrics_port: int = 9090
    """Port of `/metrics` (Prometheus), on `host`; 0 serves no metrics."""
    namespaces: tuple[str, ...] = field(
        default_factory=lambda: _env_list("TETHER_WATCH_NAMESPACES")
    )
    """Namespaces to watch (TETHER_WATCH_NAMESPACES); empty: every namespace."""
    scheduler_url: str = field(default_factory=lambda: os.environ.get("TETHER_SCHEDULER_URL", ""))
    """The URL workers reach the scheduler at (TETHER_SCHEDULER_URL)."""
    operator_namespace: str = field(
        default_factory=lambda: os.environ.get("TETHER_OPERATOR_NAMESPACE", "")
    )
    """The operator's own namespace (TETHER_OPERATOR_NAMESPACE); empty: the config's."""
    pod_name: str = field(default_factory=lambda: os.environ.get("TETHER_POD_NAME", ""))
    """The operator's pod (TETHER_POD_NAME), named in the Events it writes."""
    store: StoreKind = "kubernetes"
    """Where run history lives: `kubernetes` (ConfigMaps in the API server), `postgres`
    (the database `store_dsn` names) or `memory` (lost on exit)."""
    store_dsn: str = field(default_factory=lambda: os.environ.get("TETHER_STORE_DSN", ""))
    """The Postgres DSN of the `postgres` store (TETHER_STORE_DSN; never logged)."""
    auth: AuthKind = field(default_factory=_env_auth)
    """Who may call the scheduler (TETHER_AUTH): `tokenreview` checks every request's
    bearer token with the API server (TokenReview, SubjectAccessReview); `none` serves
    anyone who reaches the port (host-process tests)."""
    leader_elect: bool = field(default_factory=lambda: _env_flag("TETHER_LEADER_ELECT"))
    """Wait for the Lease before doing anything (TETHER_LEADER_ELECT); off: this
    process assumes it is the only operator (host-process tests, one replica)."""
    lease_name: str = field(default_factory=lambda: os.environ.get("TETHER_LEASE_NAME", "tether"))
    """The Lease of leader election (TETHER_LEASE_NAME), in the operator's namespace."""


@dataclass
class OperatorContext:
    """What a controller's `setup(registry, context)` is handed."""

    settings: OperatorSettings
    client: KubeClient
    service: SchedulerService
    events: EventRecorder
    waiting: Callable[[], Mapping[str, int]] = dict
    """Runs not in the engine yet that wait for a worker, per pool id (autoscaling)."""
    pool_health: PoolHealth = field(default_factory=PoolHealth)
    """What the pool controller sees of each pool, for the runs waiting on one."""
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Coroutines run beside the HTTP server for the operator's lifetime."""

    def spawn(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work()` for as long as the operator runs (it stops the operator if it ends)."""
        self.background.append(work)


Setup = Callable[[kopf.OperatorRegistry, OperatorContext], object]
