"""Who may talk to the scheduler, asked of the Kubernetes API server.

`KubernetesAuthenticator` is the scheduler's `Authenticator` on Kubernetes:

- A token is checked with a TokenReview, first for the scheduler's audience
  (`tether.dev/scheduler`: the projected token of a worker pod, or
  `kubectl create token SA --audience tether.dev/scheduler`), then for the API
  server's own audiences (any token `kubectl` could use). A token of the scheduler's
  audience bound to a pod (`authentication.kubernetes.io/pod-name` and `pod-uid` in
  its extra) acts as that pod; no other token can act as a worker.
- Client calls are checked with a SubjectAccessReview for the caller's user and
  groups on the resource (group `tether.dev`) in the namespace.
- A registration must come from the pod it names, in a namespace this operator
  serves, and that pod must exist with the token's uid, carry `tether.dev/pool`, and
  register with that pool (`<namespace>.<pool>`).

Answers are cached briefly, keyed by a SHA-256 of the token (never the token itself),
in a bounded LRU: accepted tokens and allowed reviews for `ttl` seconds (never past a
token's own expiry), refusals for `refusal_ttl`; an API server that cannot be asked is
not cached (the caller gets 503 and retries).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Hashable
from typing import Any

import httpx

from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.resources.naming import POOL_LABEL, pool_id_for, run_object
from tether_operator.k8s.resources.specs import GROUP
from tether_operator.scheduler.auth import (
    SCHEDULER_AUDIENCE,
    AuthError,
    AuthUnavailable,
    Forbidden,
    PodIdentity,
    Principal,
    Unauthenticated,
)
from worker_runtime.protocol import RegisterWorkerRequest

__all__ = ["KubernetesAuthenticator", "run_namespace"]

logger = logging.getLogger("tether.auth")

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
_SA_PREFIX = "system:serviceaccount:"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def run_namespace(default: str) -> Callable[[str], str]:
    """The namespace of a run id (`<namespace>.<name>`); `default` for any other id."""

    def namespace_of(run_id: str) -> str:
        try:
            return run_object(run_id)[0]
        except ValueError:
            return default

    return namespace_of


class _Cache:
    """A bounded LRU of answers with per-entry expiry, and one lookup in flight per key."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[object]] = {}
        self._max = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self, key: Hashable, compute: Callable[[], Awaitable[tuple[object, float]]]
    ) -> object:
        """The cached answer for `key`, else `compute()`'s (answer, seconds to keep it).

        An answer that is an `AuthError` is raised. Concurrent callers of one key share
        one computation; an exception it raises (rather than returns) reaches each of
        them and nothing is cached.
        """
        now = self._clock()
        found = self._entries.get(key)
        if found is not None:
            if found[0] > now:
                self._entries.move_to_end(key)
                return _unwrap(found[1])
            del self._entries[key]
        pending = self._pending.get(key)
        if pending is None:
            # A task of its own: a caller that goes away does not cancel the others' answer.
            pending = asyncio.ensure_future(self._fill(key, compute))
            self._pending[key] = pending
        return _unwrap(await asyncio.shield(pending))

    async def _fill(
        self, key: Hashable, compute: Callable[[], Awaitable[tuple[object, float]]]
    ) -> object:
        try:
            answer, keep = await compute()
        finally:
            self._pending.pop(key, None)
        if keep > 0:
            self._entries[key] = (self._clock() + keep, answer)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return answer


def _unwrap(answer: object) -> object:
    if isinstance(answer, AuthError):
        raise answer
    return answer


def token_expiry(token: str) -> float | None:
    """The `exp` claim (Unix seconds) of a JWT, read without verifying it (the API
    server verifies); None when the token is not a JWT with one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def _principal(user: dict[str, Any], scheduler_audience: bool) -> Principal:
    username = str(user.get("username", ""))
    extra = {
        str(k): tuple(str(v) for v in values or ())
        for k, values in (user.get("extra") or {}).items()
    }
    pod: PodIdentity | None = None
    names, uids = extra.get(POD_NAME_EXTRA, ()), extra.get(POD_UID_EXTRA, ())
    if scheduler_audience and username.startswith(_SA_PREFIX) and names and uids:
        namespace = username[len(_SA_PREFIX) :].split(":", 1)[0]
        pod = PodIdentity(namespace=namespace, name=names[0], uid=uids[0])
    return Principal(
        username=username,
        uid=str(user.get("uid", "")),
        groups=tuple(str(g) for g in user.get("groups") or ()),
        extra=extra,
        pod=pod,
    )


class KubernetesAuthenticator:
    """TokenReview and SubjectAccessReview through the operator's `KubeClient`."""

    def __init__(
        self,
        client: KubeClient,
        *,
        namespaces: Collection[str] = (),
        audience: str = SCHEDULER_AUDIENCE,
        ttl: float = 60.0,
        refusal_ttl: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.namespaces = frozenset(namespaces)
        """The namespaces the operator serves (empty: all); workers elsewhere are refused."""
        self.audience = audience
        self.ttl = ttl
        self.refusal_ttl = refusal_ttl
        self.clock = clock
        self._tokens = _Cache(max_entries, clock)
        self._access = _Cache(max_entries, clock)
        self.reviews = 0
        """TokenReviews and SubjectAccessReviews sent (the cache's misses)."""

    # ------------------------------------------------------------------ tokens

    async def authenticate(self, token: str) -> Principal:
        key = hashlib.sha256(token.encode()).digest()
        answer = await self._tokens.get(key, lambda: self._review_token(token))
        assert isinstance(answer, Principal)
        return answer

    async def _review_token(self, token: str) -> tuple[object, float]:
        status = await self._token_review(token, [self.audience])
        scheduler_audience = bool(status.get("authenticated"))
        if not scheduler_audience:
            status = await self._token_review(token, None)
        if not status.get("authenticated"):
            reason = status.get("error") or "the API server does not accept it"
            refusal = Unauthenticated(
                f"the bearer token was refused: {reason}. Worker pods send their projected "
                f"service-account token (audience {self.audience}); clients send a current "
                "token of a user or service account (e.g. `kubectl create token SA "
                f"--audience {self.audience}`)"
            )
            return refusal, self.refusal_ttl
        principal = _principal(status.get("user") or {}, scheduler_audience)
        keep = self.ttl
        if (expiry := token_expiry(token)) is not None:
            keep = min(keep, expiry - self.clock())
        return principal, keep

    async def _token_review(self, token: str, audiences: list[str] | None) -> dict[str, Any]:
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        answer = await self._post(TOKEN_REVIEWS, body, "review the token (TokenReview)")
        status = answer.get("status") or {}
        return status if isinstance(status, dict) else {}

    # ------------------------------------------------------------------ access

    async def allows(
        self, principal: Principal, verb: str, resource: str, namespace: str | None
    ) -> bool:
        key = (
            principal.username,
            principal.uid,
            principal.groups,
            tuple(sorted(principal.extra.items())),
            verb,
            resource,
            namespace,
        )
        allowed = await self._access.get(
            key, lambda: self._review_access(principal, verb, resource, namespace)
        )
        return bool(allowed)

    async def _review_access(
        self, principal: Principal, verb: str, resource: str, namespace: str | None
    ) -> tuple[object, float]:
        attributes: dict[str, str] = {"group": GROUP, "resource": resource, "verb": verb}
        if namespace:
            attributes["namespace"] = namespace
        spec: dict[str, Any] = {
            "user": principal.username,
            "groups": list(principal.groups),
            "resourceAttributes": attributes,
        }
        if principal.uid:
            spec["uid"] = principal.uid
        if principal.extra:
            spec["extra"] = {k: list(v) for k, v in principal.extra.items()}
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        }
        answer = await self._post(ACCESS_REVIEWS, body, "review access (SubjectAccessReview)")
        allowed = bool((answer.get("status") or {}).get("allowed"))
        return allowed, self.ttl if allowed else self.refusal_ttl

    # ------------------------------------------------------------------ workers

    async def check_registration(self, principal: Principal, req: RegisterWorkerRequest) -> None:
        pod = principal.pod
        if pod is None:
            raise Forbidden(f"{principal.describe()} is not a pod: it may not register a worker")
        if self.namespaces and pod.namespace not in self.namespaces:
            raise Forbidden(
                f"pod {pod} is in namespace {pod.namespace!r}, which this operator does not "
                f"serve ({', '.join(sorted(self.namespaces))}): run workers in a served "
                "namespace or add it to the chart's watchNamespaces",
                field="namespace",
            )
        if req.namespace and req.namespace != pod.namespace:
            raise Forbidden(
                f"pod {pod} may not register for namespace {req.namespace!r}: a worker "
                "registers in its own pod's namespace",
                field="namespace",
            )
        live = await self._pod(pod)
        meta = live.get("metadata") or {}
        if meta.get("uid") != pod.uid:
            raise Forbidden(
                f"pod {pod} now has uid {meta.get('uid')!r}, not the token's {pod.uid!r}: "
                "the token belongs to a pod that is gone"
            )
        pool = (meta.get("labels") or {}).get(POOL_LABEL)
        if not pool:
            raise Forbidden(
                f"pod {pod} has no {POOL_LABEL} label: only pods of a WorkerPool may "
                "register as workers",
            )
        expected = pool_id_for(pod.namespace, pool)
        if req.pool != expected:
            raise Forbidden(
                f"pod {pod} belongs to pool {expected!r} ({POOL_LABEL}={pool}) and may not "
                f"register with pool {req.pool!r}: set TETHER_POOL={expected}",
                field="pool",
            )

    async def _pod(self, pod: PodIdentity) -> dict[str, Any]:
        path = paths.pods(pod.namespace, pod.name)
        try:
            found = await self.client.get(path)
        except ApiError as exc:
            if exc.not_found:
                raise Forbidden(f"pod {pod} does not exist: its token is stale") from None
            if exc.status == 403:
                raise Forbidden(
                    f"this operator may not read pods in namespace {pod.namespace!r}, so it "
                    "does not serve workers there"
                ) from None
            raise AuthUnavailable(
                f"could not look up pod {pod}: {exc}; the worker should retry"
            ) from None
        except httpx.HTTPError as exc:
            raise AuthUnavailable(
                f"could not look up pod {pod}: the API server is unreachable ({exc!r})"
            ) from None
        return found if isinstance(found, dict) else {}

    # ------------------------------------------------------------------ plumbing

    async def _post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        self.reviews += 1
        try:
            answer = await self.client.request("POST", path, body=body)
        except ApiError as exc:
            logger.warning("could not %s: %s", what, exc)
            raise AuthUnavailable(
                f"the scheduler could not {what}: the API server answered {exc.status} "
                f"{exc.reason}; retry, and check the operator's RBAC (create on "
                "tokenreviews and subjectaccessreviews)"
            ) from None
        except httpx.HTTPError as exc:
            logger.warning("could not %s: %r", what, exc)
            raise AuthUnavailable(
                f"the scheduler could not {what}: the API server is unreachable; retry"
            ) from None
        return answer if isinstance(answer, dict) else {}
