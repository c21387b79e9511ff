"""Leader election with a `coordination.k8s.io/v1` Lease: one active scheduler.

kopf's peering pauses operators by priority; it is not leader election. Here every
operator replica is a candidate with its own identity (pod name plus a random suffix
per process, so a restarted container is a new candidate) and the Lease says who
leads, the way client-go's `leaderelection` does it:

- A candidate takes the Lease when nobody holds it, when the holder released it
  (empty `holderIdentity`), or when the holder's record has not changed for
  `lease_duration` seconds by the candidate's own clock (clocks of different
  machines are never compared). Every write is a PUT with the `resourceVersion`
  read, so of two candidates only one wins; taking it from another holder (or after
  a release) increments `leaseTransitions`, which is the leader's **epoch** (the
  fencing token the run store stamps on history, `store/history.py`).
- The leader renews every `retry_period`; when no renewal succeeded for
  `renew_deadline` seconds, or it sees another holder, it has lost the Lease
  (`LeadershipLost`) and must stop at once. `renew_deadline` < `lease_duration`
  leaves a margin: the old leader has stopped before a standby may take over.
- On a graceful shutdown the leader releases the Lease (empty holder), so a standby
  takes over at its next retry instead of waiting for the Lease to expire.

Defaults (15 s / 10 s / 2 s) are client-go's and kube-controller-manager's: a killed
leader is replaced within `lease_duration + retry_period` (about 17 s), a released
one within `retry_period`, and a busy apiserver gets five tries before a leader
gives up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.api.paths import LEASE_API_VERSION

__all__ = [
    "LEADER_LABEL",
    "LeaderElector",
    "LeadershipLost",
    "LeaseSettings",
    "label_pod",
    "new_identity",
]

logger = logging.getLogger("tether.operator.leader")

LEADER_LABEL = "tether.dev/leader"
"""`"true"` on the leader's pod once it serves: the chart's Service selects it."""


async def label_pod(client: KubeClient, namespace: str, pod: str, leading: bool) -> dict[str, Any]:
    """Set (`leading`) or remove `tether.dev/leader=true` on the operator's own pod;
    the pod as patched."""
    patch = {"metadata": {"labels": {LEADER_LABEL: "true" if leading else None}}}
    result: dict[str, Any] = await client.patch(paths.pods(namespace, pod), patch)
    return result


HOLDER_POD_ANNOTATION = "tether.dev/holder-pod"
"""On the Lease: the pod of its holder, in the Lease's namespace."""


def new_identity(pod_name: str = "") -> str:
    """`<pod or host name>_<random>`: unique per process, readable in `kubectl get lease`."""
    return f"{pod_name or socket.gethostname()}_{secrets.token_hex(4)}"


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{name}={text!r} must be more than 0 seconds")
    return value


@dataclass(frozen=True)
class LeaseSettings:
    """Which Lease the candidates share and how they time it."""

    name: str = field(default_factory=lambda: os.environ.get("TETHER_LEASE_NAME", "tether"))
    """The Lease's name (TETHER_LEASE_NAME), in the operator's namespace."""
    namespace: str = "default"
    """The Lease's namespace: the operator's own."""
    identity: str = field(
        default_factory=lambda: new_identity(os.environ.get("TETHER_POD_NAME", ""))
    )
    """This candidate's `holderIdentity`."""
    lease_duration: float = field(
        default_factory=lambda: _env_seconds("TETHER_LEASE_DURATION", 15.0)
    )
    """Seconds a standby waits on an unchanged record before it takes the Lease
    (TETHER_LEASE_DURATION)."""
    renew_deadline: float = field(
        default_factory=lambda: _env_seconds("TETHER_LEASE_RENEW_DEADLINE", 10.0)
    )
    """Seconds the leader keeps trying to renew before it gives up leading
    (TETHER_LEASE_RENEW_DEADLINE)."""
    retry_period: float = field(
        default_factory=lambda: _env_seconds("TETHER_LEASE_RETRY_PERIOD", 2.0)
    )
    """Seconds between two tries, to acquire or to renew (TETHER_LEASE_RETRY_PERIOD)."""
    pod: str = field(default_factory=lambda: os.environ.get("TETHER_POD_NAME", ""))
    """The pod this candidate runs in ("" outside Kubernetes). The holder writes it on
    the Lease (`HOLDER_POD_ANNOTATION`), so a candidate that finds the Lease held by a
    pod that no longer exists (the release was uninstalled, the pod force-deleted)
    takes it at once instead of waiting out the lease duration."""

    def __post_init__(self) -> None:
        if not self.renew_deadline < self.lease_duration:
            raise ValueError(
                f"the lease renew deadline ({self.renew_deadline}s) must be shorter than the "
                f"lease duration ({self.lease_duration}s): a leader that cannot renew must "
                "stop before a standby may take over"
            )
        if not self.retry_period < self.renew_deadline:
            raise ValueError(
                f"the lease retry period ({self.retry_period}s) must be shorter than the "
                f"renew deadline ({self.renew_deadline}s)"
            )


class LeadershipLost(Exception):
    """This process no longer holds the Lease: it must stop writing and exit."""


def _micro_time(wall: float) -> str:
    """A Kubernetes MicroTime: RFC 3339 UTC with microseconds."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Observed:
    """The last Lease record seen, and when (by this process's monotonic clock)."""

    holder: str = ""
    renew_time: str = ""
    transitions: int = 0
    at: float = 0.0


class LeaderElector:
    """Acquires, renews and releases one Lease for this process.

    `acquire()` returns the epoch once this process leads; `hold()` renews until the
    Lease is lost (then raises `LeadershipLost`); `release()` hands it over on a
    graceful stop. `on_change(leading, message)` is told of every change.
    """

    def __init__(
        self,
        client: KubeClient,
        settings: LeaseSettings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_change: Callable[[bool, str], None] | None = None,
    ) -> None:
        self._client = client
        self.settings = settings
        self._monotonic = monotonic
        self._wall = wall
        self._on_change = on_change
        self._observed = _Observed()
        self._asked_about: str | None = None
        """The last holder whose pod was looked up."""
        self._renewed_at: float | None = None
        self.epoch: int | None = None
        """`leaseTransitions` when this process took the Lease; None while not leading."""
        self.uid: str | None = None
        """The Lease object's uid (a Lease deleted and created again is a new one)."""

    @property
    def identity(self) -> str:
        return self.settings.identity

    @property
    def path(self) -> str:
        s = self.settings
        return paths.leases(s.namespace, s.name)

    @property
    def leading(self) -> bool:
        """True while the last renewal is younger than the renew deadline."""
        return (
            self.epoch is not None
            and self._renewed_at is not None
            and self._monotonic() - self._renewed_at < self.settings.renew_deadline
        )

    @property
    def held_elsewhere(self) -> bool:
        """Whether another candidate held the Lease at the last look, with a record
        younger than the lease duration (a live leader, as far as this one can tell)."""
        o = self._observed
        return (
            bool(o.holder)
            and o.holder != self.identity
            and o.at > 0.0
            and self._monotonic() - o.at < self.settings.lease_duration
        )

    async def acquire(self) -> int:
        """Wait until this process holds the Lease; its epoch (`leaseTransitions`)."""
        s = self.settings
        logger.info("waiting to lead: lease %s/%s as %s", s.namespace, s.name, self.identity)
        while True:
            try:
                if await self._try():
                    assert self.epoch is not None
                    self._changed(
                        True,
                        f"{self.identity} leads (lease {s.namespace}/{s.name}, epoch {self.epoch})",
                    )
                    return self.epoch
            except ApiError as exc:
                logger.warning("could not read or take lease %s/%s: %s", s.namespace, s.name, exc)
            except Exception as exc:  # the apiserver unreachable: try again
                logger.warning("could not reach the apiserver for the lease: %r", exc)
            await asyncio.sleep(s.retry_period)

    async def hold(self) -> None:
        """Renew the Lease every retry period; raise `LeadershipLost` once it is lost."""
        s = self.settings
        while True:
            await asyncio.sleep(s.retry_period)
            assert self._renewed_at is not None
            remaining = s.renew_deadline - (self._monotonic() - self._renewed_at)
            try:
                renewed = await asyncio.wait_for(self._try(), max(remaining, 0.001))
            except LeadershipLost:
                raise
            except Exception as exc:
                renewed = False
                logger.warning("could not renew lease %s/%s: %r", s.namespace, s.name, exc)
            if not renewed and self._monotonic() - self._renewed_at >= s.renew_deadline:
                self._lost(f"no renewal of lease {s.namespace}/{s.name} for {s.renew_deadline:g}s")

    async def release(self) -> None:
        """Give the Lease up (graceful stop) so a standby takes it at once."""
        if self.epoch is None:
            return
        s = self.settings
        epoch, self.epoch = self.epoch, None
        try:
            lease = await self._client.get(self.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = _micro_time(self._wall())
            lease["spec"] = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "renewTime": now,
            }
            await self._client.replace(self.path, lease)
        except Exception as exc:
            logger.warning("could not release lease %s/%s: %r", s.namespace, s.name, exc)
            return
        self._changed(
            False, f"{self.identity} released lease {s.namespace}/{s.name} (epoch {epoch})"
        )

    async def confirm(self) -> bool:
        """Read the Lease now: True if this process still holds it with its epoch."""
        if self.epoch is None:
            return False
        lease = await self._client.get(self.path)
        spec = lease.get("spec") or {}
        return (
            spec.get("holderIdentity") == self.identity
            and int(spec.get("leaseTransitions") or 0) == self.epoch
            and lease["metadata"].get("uid") == self.uid
        )

    # ------------------------------------------------------------------ internals

    async def _try(self) -> bool:
        """One acquire-or-renew round; True if this process holds the Lease after it."""
        s = self.settings
        try:
            lease = await self._client.get(self.path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            if self.epoch is not None:
                self._lost(f"lease {s.namespace}/{s.name} was deleted")
            return await self._create()
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        transitions = int(spec.get("leaseTransitions") or 0)
        now = self._monotonic()
        record = (holder, str(spec.get("renewTime") or ""), transitions)
        o = self._observed
        if record != (o.holder, o.renew_time, o.transitions) or o.at == 0.0:
            self._observed = o = _Observed(record[0], record[1], record[2], now)
        mine = holder == self.identity
        if self.epoch is not None and (not mine or lease["metadata"].get("uid") != self.uid):
            self._lost(f"lease {s.namespace}/{s.name} is held by {holder or 'nobody'} now")
        duration = float(spec.get("leaseDurationSeconds") or s.lease_duration)
        live = not mine and holder and now - o.at < duration
        if live and not await self._holder_pod_gone(lease, holder):
            return False  # held by a live candidate
        wall = _micro_time(self._wall())
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(s.lease_duration)),
            "renewTime": wall,
            "acquireTime": spec.get("acquireTime") if mine else wall,
            "leaseTransitions": transitions if mine else transitions + 1,
        }
        # The metadata carries resourceVersion: a conflict is a 409.
        meta = {**lease["metadata"], "annotations": self._annotations(lease["metadata"])}
        body = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": meta,
            "spec": new_spec,
        }
        try:
            updated = await self._client.replace(self.path, body)
        except ApiError as exc:
            if exc.conflict:
                return False  # another candidate wrote first; read again next round
            raise
        self._took(updated)
        return True

    async def _create(self) -> bool:
        s = self.settings
        wall = _micro_time(self._wall())
        body = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": {
                "name": s.name,
                "namespace": s.namespace,
                "annotations": self._annotations({}),
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(s.lease_duration)),
                "acquireTime": wall,
                "renewTime": wall,
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self._client.create(paths.leases(s.namespace), body)
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        self._took(created)
        return True

    def _annotations(self, meta: dict[str, Any]) -> dict[str, str]:
        """The Lease's annotations with this candidate's pod as the holder's."""
        annotations = {
            k: v for k, v in (meta.get("annotations") or {}).items() if k != HOLDER_POD_ANNOTATION
        }
        if self.settings.pod:
            annotations[HOLDER_POD_ANNOTATION] = self.settings.pod
        return annotations

    async def _holder_pod_gone(self, lease: dict[str, Any], holder: str) -> bool:
        """Whether the holder's pod (from the Lease's annotation) no longer exists; asked
        once per holder, since a pod that exists is left to the lease duration."""
        pod = (lease["metadata"].get("annotations") or {}).get(HOLDER_POD_ANNOTATION)
        if not pod or self._asked_about == holder:
            return False
        self._asked_about = holder
        s = self.settings
        try:
            await self._client.get(paths.pods(s.namespace, pod))
        except ApiError as exc:
            if exc.not_found:
                logger.info(
                    "lease %s/%s is held by %s, whose pod %s is gone: taking it now",
                    s.namespace,
                    s.name,
                    holder,
                    pod,
                )
                return True
            logger.warning("could not look up pod %s of lease holder %s: %s", pod, holder, exc)
        return False

    def _took(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        self._renewed_at = self._monotonic()
        self.epoch = int(spec.get("leaseTransitions") or 0)
        self.uid = str(lease["metadata"].get("uid") or "")
        self._observed = _Observed(
            self.identity, str(spec.get("renewTime") or ""), self.epoch, self._renewed_at
        )

    def _lost(self, why: str) -> None:
        self.epoch = None
        self._renewed_at = None
        message = f"{self.identity} lost the lease: {why}"
        self._changed(False, message)
        raise LeadershipLost(message)

    def _changed(self, leading: bool, message: str) -> None:
        logger.log(logging.INFO if leading else logging.WARNING, message)
        if self._on_change is not None:
            try:
                self._on_change(leading, message)
            except Exception:
                logger.exception("leadership listener failed")
