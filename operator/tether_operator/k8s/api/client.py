"""A small async Kubernetes API client, for the operator's hot paths.

kopf watches and runs handlers; history appends, status patches, Events and pod
writes go through `KubeClient` so they never block the event loop (the official
`kubernetes` package is synchronous). Requests go as HTTP/1.1 over TLS through the
workers' lean transport (`worker_runtime.transport.FastTransport`), or through any httpx
transport given (tests). `load_config()` reads the in-cluster service account, else the
kubeconfig `KUBECONFIG` (or `~/.kube/config`) names.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx
import yaml

from worker_runtime.transport import FastTransport, Origin, scheduler_transport

__all__ = [
    "ApiError",
    "KubeClient",
    "KubeConfig",
    "KubeConfigError",
    "load_config",
    "resource_path",
]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
"""Bound service-account tokens rotate: the file is read again after this long."""
MAX_CONNECTIONS = 64
"""Connections to the API server kept open for reuse: as many as requests in flight at
once (history appends, status writes, Events), so none pays a TLS handshake."""

PatchType = Literal["merge", "json", "strategic"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class KubeConfigError(Exception):
    """No usable cluster credentials: the message says where they were looked for."""


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP status code."""

    def __init__(self, status: int, reason: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: the object exists already, or its resourceVersion moved on."""
        return self.status == 409


@dataclass
class KubeConfig:
    """Where the API server is and how to authenticate to it."""

    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    namespace: str = "default"
    insecure: bool = False
    _token_read_at: float = field(default=0.0, repr=False)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS settings for the API server (False: do not verify it)."""
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def bearer_token(self) -> str | None:
        """The token to send now (a token file is re-read every minute)."""
        if self.token_file and (
            self.token is None or time.monotonic() - self._token_read_at > TOKEN_REREAD_SECONDS
        ):
            self.token = Path(self.token_file).read_text().strip()
            self._token_read_at = time.monotonic()
        return self.token


def _materialise(data_b64: str, suffix: str, folder: Path) -> str:
    """Write base64 `*-data` from a kubeconfig to a private file (ssl wants paths)."""
    path = folder / suffix
    path.write_bytes(base64.b64decode(data_b64))
    path.chmod(0o600)
    return str(path)


def kubeconfig_namespace() -> str | None:
    """The namespace of the kubeconfig's current context (`default` if it names none),
    as kubectl takes it; None without a readable kubeconfig ($KUBECONFIG's first file,
    else ~/.kube/config)."""
    listed = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = Path(listed) if listed else Path.home() / ".kube" / "config"
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict):
        return None
    contexts = {c.get("name"): c.get("context") or {} for c in doc.get("contexts") or []}
    context = contexts.get(doc.get("current-context"))
    if context is None:
        return None
    return str(context.get("namespace") or "default")


def _from_kubeconfig(path: Path) -> KubeConfig:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    ctx_name = doc.get("current-context")
    contexts = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
    if ctx_name not in contexts:
        raise KubeConfigError(f"kubeconfig {path}: current-context {ctx_name!r} is not defined")
    ctx = contexts[ctx_name]
    clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
    users = {u["name"]: u.get("user", {}) for u in doc.get("users") or []}
    cluster = clusters.get(ctx.get("cluster"), {})
    user = users.get(ctx.get("user"), {})
    if "server" not in cluster:
        raise KubeConfigError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    folder = Path(tempfile.mkdtemp(prefix="tether-kube-"))
    folder.chmod(0o700)

    def pick(section: dict[str, Any], key: str, suffix: str) -> str | None:
        if section.get(f"{key}-data"):
            return _materialise(section[f"{key}-data"], suffix, folder)
        value = section.get(key)
        return str((path.parent / value).resolve()) if value else None

    return KubeConfig(
        server=cluster["server"].rstrip("/"),
        ca_file=pick(cluster, "certificate-authority", "ca.crt"),
        cert_file=pick(user, "client-certificate", "client.crt"),
        key_file=pick(user, "client-key", "client.key"),
        token=user.get("token"),
        token_file=user.get("tokenFile"),
        namespace=ctx.get("namespace", "default"),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
    )


def load_config(*, service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> KubeConfig:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    token_file = service_account_dir / "token"
    if host and token_file.exists():
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        ns_file = service_account_dir / "namespace"
        return KubeConfig(
            server=f"https://{host}:{port}",
            ca_file=str(service_account_dir / "ca.crt"),
            token_file=str(token_file),
            namespace=ns_file.read_text().strip() if ns_file.exists() else "default",
        )
    path = Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config")
    path = path.expanduser()
    if not path.exists():
        raise KubeConfigError(
            f"no Kubernetes credentials: not in a pod and no kubeconfig at {path} (set KUBECONFIG)"
        )
    return _from_kubeconfig(path)


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """`/api/v1/namespaces/ns/pods/name` or `/apis/group/v1/...` for a resource."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [base]
    if namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name is not None:
        parts.append(name)
        if subresource is not None:
            parts.append(subresource)
    return "/".join(parts)


def _user_agent() -> str:
    try:
        release = version("tether")
    except PackageNotFoundError:
        release = "dev"
    return f"tether-operator/{release}"


USER_AGENT = _user_agent()
"""Sent with every request: the API server names the writer of a field after the part
before the `/` (`metadata.managedFields[].manager`), and audit logs show it whole."""


class KubeClient:
    """JSON requests to the API server over one pooled `httpx.AsyncClient`.

    Every method raises `ApiError` for a non-2xx answer. `writes` counts mutating
    requests sent (benchmarks report API writes per second from it).
    """

    def __init__(
        self,
        config: KubeConfig,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.config = config
        self.writes = 0
        self.observe: Callable[[str, str], None] | None = None
        """Told each request's method and answer (`200`, `409`, ... or `error` when no
        answer came): the operator counts them in its metrics."""
        self._user_agent = user_agent
        self._timeout = timeout
        self._origin = Origin.of(config.server)
        self._base_path = httpx.URL(config.server).raw_path.decode("ascii").rstrip("/")
        if transport is None:
            # HTTP/1.1 and TLS on asyncio streams: httpx costs ~1 ms of CPU per request,
            # and every history append and status write of the operator is one.
            transport = FastTransport(
                max_idle_per_host=MAX_CONNECTIONS, ssl_context=_ssl_context(config)
            )
        self._transport = scheduler_transport(transport)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; the decoded JSON answer (None for an empty body)."""
        headers = [("Accept", "application/json"), ("User-Agent", self._user_agent)]
        token = self.config.bearer_token()
        if token:
            headers.append(("Authorization", f"Bearer {token}"))
        data = None
        if body is not None:
            headers.append(("Content-Type", content_type))
            data = json.dumps(body, separators=(",", ":")).encode()
        if method != "GET":
            self.writes += 1
        target = self._base_path + quote(path, safe="/:@!$&'()*+,;=-._~")
        if params:
            target += "?" + urlencode(params)
        try:
            status, raw_headers, content = await self._transport.request_raw(
                method,
                self._origin,
                target,
                data,
                headers,
                connect_timeout=self._timeout,
                read_timeout=self._timeout,
            )
        except Exception:
            if self.observe is not None:
                self.observe(method, "error")
            raise
        if self.observe is not None:
            self.observe(method, str(status))
        if status >= 300:
            raise _api_error(httpx.Response(status, headers=raw_headers, content=content))
        return json.loads(content) if content else None

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def list(
        self, path: str, *, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a collection (following `continue` tokens)."""
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        while True:
            page = await self.get(path, params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    async def create(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("PUT", path, body=body)

    async def patch(self, path: str, body: Any, patch_type: PatchType = "merge") -> Any:
        return await self.request(
            "PATCH", path, body=body, content_type=_PATCH_CONTENT_TYPES[patch_type]
        )

    async def delete(
        self,
        path: str,
        *,
        propagation: str | None = None,
        preconditions: dict[str, str] | None = None,
        missing_ok: bool = True,
    ) -> Any:
        """Delete an object; a 404 is fine unless `missing_ok` is False."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            body["propagationPolicy"] = propagation
        if preconditions:
            body["preconditions"] = preconditions
        try:
            return await self.request("DELETE", path, body=body)
        except ApiError as exc:
            if exc.not_found and missing_ok:
                return None
            raise


def _ssl_context(config: KubeConfig) -> ssl.SSLContext:
    verified = config.ssl_context()
    if isinstance(verified, ssl.SSLContext):
        return verified
    unverified = ssl.create_default_context()  # insecure-skip-tls-verify
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    if config.cert_file and config.key_file:
        unverified.load_cert_chain(config.cert_file, config.key_file)
    return unverified


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return ApiError(
            response.status_code, str(body.get("reason", "")), str(body.get("message", "")), body
        )
    return ApiError(response.status_code, response.reason_phrase, response.text[:500], body)
