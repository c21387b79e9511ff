"""Who may talk to the scheduler: the seam between the HTTP API and an identity provider.

Without an `Authenticator` (dev mode, tests) every request is served, as on a loopback
scheduler. With one, `AuthMiddleware` asks it who sends each request's bearer token
(every path but the probes and the run page's files, `is_open_path`) and applies the path rules:

- worker calls (`/v1/workers/{id}/...`, `/v1/tasks/...` with `X-Tether-Worker`) need a
  token bound to a pod, and that pod must be the worker: its name is the worker id,
  and once registered, the same pod (namespace and uid) makes every call;
- registration (`POST /v1/workers`) is checked against the body by the authenticator
  (the pod exists, belongs to the pool it names), in the route;
- client calls ask `Authenticator.allows` for a verb on a resource in a namespace
  (`client_rule`), in the route, since the namespace may come from the body.

A refused request changes nothing: the checks run before the service is called.
The Kubernetes implementation (TokenReview, SubjectAccessReview) is
`tether_operator.k8s.access.auth.KubernetesAuthenticator`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from tether_operator.scheduler.ui import is_ui_path
from worker_runtime.protocol import API_PREFIX, RegisterWorkerRequest

__all__ = [
    "OPEN_PATHS",
    "PRINCIPAL_SCOPE_KEY",
    "SCHEDULER_AUDIENCE",
    "AuthError",
    "AuthMiddleware",
    "AuthUnavailable",
    "Authenticator",
    "Forbidden",
    "Gate",
    "PodIdentity",
    "Principal",
    "Unauthenticated",
    "auth_problem",
    "is_open_path",
    "principal_of",
]

SCHEDULER_AUDIENCE = "tether.dev/scheduler"
"""The audience of the projected service-account tokens worker pods present."""
PRINCIPAL_SCOPE_KEY = "tether.principal"
"""ASGI scope key: the `Principal` of an authenticated request."""
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Probes: served without a token (the kubelet has none)."""


def is_open_path(path: str) -> bool:
    """Served without a token: the probes, and the run page's files, which hold no data
    (the page reads the API with the caller's token)."""
    return path in OPEN_PATHS or is_ui_path(path)


WORKER_HEADER = "x-tether-worker"

_WORKERS = f"{API_PREFIX}/workers"
_TASKS = f"{API_PREFIX}/tasks/"


@dataclass(frozen=True, slots=True)
class PodIdentity:
    """The pod a bound service-account token was issued for."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: a user or service account, maybe acting as a pod."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    pod: PodIdentity | None = None

    def describe(self) -> str:
        return f"pod {self.pod}" if self.pod is not None else f"user {self.username!r}"


class AuthError(Exception):
    """A refused request: HTTP `status`, a CamelCase `error` and a message saying what to do."""

    status = 403
    error = "Forbidden"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Unauthenticated(AuthError):
    """No token, or one the identity provider does not accept (401)."""

    status = 401
    error = "Unauthenticated"


class Forbidden(AuthError):
    """A known caller asking for something it may not do (403)."""


class AuthUnavailable(AuthError):
    """The identity provider could not be asked; the caller should retry (503)."""

    status = 503
    error = "AuthUnavailable"


def auth_problem(exc: AuthError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, Problem body and headers of a refused request."""
    body = json.dumps({"error": exc.error, "message": exc.message, "field": exc.field}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="tether"'))
    return exc.status, body, headers


class Authenticator(Protocol):
    """An identity provider: who a token belongs to, and what it may do."""

    async def authenticate(self, token: str) -> Principal:
        """The token's principal; raises `Unauthenticated` (or `AuthUnavailable`)."""
        ...

    async def allows(
        self, principal: Principal, verb: str, resource: str, namespace: str | None
    ) -> bool:
        """Whether `principal` may `verb` `resource` in `namespace` (None: cluster-wide)."""
        ...

    async def check_registration(self, principal: Principal, req: RegisterWorkerRequest) -> None:
        """Raise `Forbidden` unless `principal` may register as the worker `req` describes."""
        ...


def principal_of(scope: Scope) -> Principal | None:
    """The request's principal (None when the scheduler runs without authentication)."""
    found = scope.get(PRINCIPAL_SCOPE_KEY)
    return found if isinstance(found, Principal) else None


class Gate:
    """The rules, over an `Authenticator`; remembers which pod registered each worker."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        run_namespace: Callable[[str], str],
        worker_alive: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self.authenticator = authenticator
        self.run_namespace = run_namespace
        """The namespace whose RBAC governs a run id (client calls about it)."""
        self._worker_alive = worker_alive
        self._bound: dict[str, PodIdentity] = {}
        """worker id -> the pod that registered it."""

    async def authenticate(self, scope: Scope) -> Principal:
        """The principal of the request's bearer token; raises `Unauthenticated`."""
        token = _bearer(scope)
        if token is None:
            raise Unauthenticated(
                "this scheduler needs a bearer token: worker pods send their projected "
                f"service-account token (audience {SCHEDULER_AUDIENCE}); clients send one "
                "with `tether --token` or TETHER_TOKEN (e.g. `kubectl create token SA "
                f"--audience {SCHEDULER_AUDIENCE}`)"
            )
        return await self.authenticator.authenticate(token)

    def check_worker(self, principal: Principal, worker_id: str) -> None:
        """Raise `Forbidden` unless `principal` is the pod of worker `worker_id` (the pod
        that registered it, once it did)."""
        pod = _own_pod(principal, worker_id)
        bound = self._bound.get(worker_id)
        if bound is not None and bound != pod:
            raise Forbidden(
                f"worker {worker_id!r} was registered by pod {bound} (uid {bound.uid}), not "
                f"by pod {pod} (uid {pod.uid}): register again from this pod",
                field="worker_id",
            )

    async def check_registration(self, principal: Principal, req: RegisterWorkerRequest) -> None:
        """Raise `Forbidden` unless `principal` may register as `req.worker_id`; on success
        the worker id is bound to the principal's pod."""
        pod = _own_pod(principal, req.worker_id)
        if req.pod and req.pod != pod.name:
            raise Forbidden(
                f"pod {pod} may not register as pod {req.pod!r}: a worker registers as its own pod",
                field="pod",
            )
        bound = self._bound.get(req.worker_id)
        if (
            bound is not None
            and bound.namespace != pod.namespace
            and self._worker_alive(req.worker_id)
        ):
            raise Forbidden(
                f"worker {req.worker_id!r} is registered by pod {bound}, which is still alive: "
                f"pod {pod} may not take its place (worker ids are pod names and must be unique "
                "across the namespaces one scheduler serves)",
                field="worker_id",
            )
        if req.namespace and req.namespace != pod.namespace:
            raise Forbidden(
                f"pod {pod} may not register for namespace {req.namespace!r}: a worker "
                "serves its own pod's namespace only (leave `namespace` empty, or set "
                "TETHER_POD_NAMESPACE from the pod's metadata.namespace)",
                field="namespace",
            )
        await self.authenticator.check_registration(principal, req)
        self._bound[req.worker_id] = pod

    async def require(
        self, principal: Principal, verb: str, resource: str, namespace: str | None
    ) -> None:
        """Raise `Forbidden` unless RBAC lets `principal` `verb` `resource` there."""
        if not await self.authenticator.allows(principal, verb, resource, namespace):
            where = f"in namespace {namespace!r}" if namespace else "cluster-wide"
            raise Forbidden(
                f"{principal.describe()} may not {verb} {resource} {where}: grant it with a "
                f"Role (or ClusterRole) allowing {verb!r} on {resource!r} (apiGroup "
                "tether.dev) and a binding to this user or service account"
            )

    async def allowed_namespaces(
        self, principal: Principal, verb: str, resource: str, namespaces: Iterable[str]
    ) -> set[str]:
        """Those of `namespaces` where `principal` may `verb` `resource`."""
        return {
            ns
            for ns in set(namespaces)
            if await self.authenticator.allows(principal, verb, resource, ns)
        }


def _own_pod(principal: Principal, worker_id: str) -> PodIdentity:
    """The principal's pod, if it is the pod of worker `worker_id`; else `Forbidden`."""
    pod = principal.pod
    if pod is None:
        raise Forbidden(
            f"{principal.describe()} may not act as worker {worker_id!r}: worker calls "
            "need the projected service-account token of the worker's own pod "
            f"(audience {SCHEDULER_AUDIENCE})",
            field="worker_id",
        )
    if pod.name != worker_id:
        raise Forbidden(
            f"pod {pod} may not act as worker {worker_id!r}: a worker may only call as "
            "its own pod (its worker id is its pod name)",
            field="worker_id",
        )
    return pod


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def worker_of_path(method: str, path: str, scope: Scope) -> str | None:
    """The worker a worker call acts as (None for other calls).

    `/v1/workers/{id}/{action}` names it in the path; `/v1/tasks/{id}/{action}` in the
    `X-Tether-Worker` header (an empty string when that is missing).
    """
    if method != "POST":
        return None
    if path.startswith(_WORKERS + "/"):
        worker_id, _, action = path[len(_WORKERS) + 1 :].rpartition("/")
        return worker_id if worker_id and action else None
    if path.startswith(_TASKS):
        return _header(scope, WORKER_HEADER.encode()) or ""
    return None


class AuthMiddleware:
    """Outermost ASGI layer when the scheduler authenticates: every request but the
    probes carries a token the `Gate` accepts; worker calls act as their own pod."""

    def __init__(
        self, app: ASGIApp, gate: Gate, refused: Callable[[str], None] | None = None
    ) -> None:
        self.app = app
        self.gate = gate
        self.refused = refused
        """Told the error kind of each request refused here (a metrics counter)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.gate.authenticate(scope)
            worker_id = worker_of_path(scope["method"], scope["path"], scope)
            if worker_id is not None:
                self.gate.check_worker(principal, worker_id)
        except AuthError as exc:
            if self.refused is not None:
                self.refused(exc.error)
            status, body, headers = auth_problem(exc)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)
