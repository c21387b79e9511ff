"""`tether_operator.k8s.api.client`: credentials, requests and errors, over an httpx
MockTransport."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tether_operator.k8s.api.client import (
    ApiError,
    KubeClient,
    KubeConfig,
    KubeConfigError,
    load_config,
    resource_path,
)


def write_kubeconfig(folder: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "contexts": [
            {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team"}},
            {"name": "other", "context": {"cluster": "missing", "user": "u"}},
        ],
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
    }
    path = folder / "config"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def outside_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.usefixtures("outside_cluster")
def test_kubeconfig_data_fields_become_private_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_kubeconfig(
        tmp_path,
        {"server": "https://10.0.0.1:6443/", "certificate-authority-data": b64(b"CA PEM")},
        {"client-certificate-data": b64(b"CERT PEM"), "client-key-data": b64(b"KEY PEM")},
    )
    monkeypatch.setenv("KUBECONFIG", f"{path}:/elsewhere/config")
    config = load_config()
    assert config.server == "https://10.0.0.1:6443"
    assert config.namespace == "team"
    assert config.ca_file is not None
    assert config.cert_file is not None
    assert config.key_file is not None
    assert Path(config.ca_file).read_bytes() == b"CA PEM"
    assert Path(config.cert_file).read_bytes() == b"CERT PEM"
    assert Path(config.key_file).read_bytes() == b"KEY PEM"
    assert Path(config.key_file).stat().st_mode & 0o777 == 0o600
    assert Path(config.key_file).parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.usefixtures("outside_cluster")
def test_kubeconfig_file_paths_are_relative_to_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_kubeconfig(
        tmp_path,
        {"server": "https://api:6443", "certificate-authority": "pki/ca.crt"},
        {"client-certificate": "/abs/client.crt", "client-key": "pki/client.key", "token": "t0k"},
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    config = load_config()
    assert config.ca_file == str(tmp_path / "pki" / "ca.crt")
    assert config.cert_file == "/abs/client.crt"
    assert config.key_file == str(tmp_path / "pki" / "client.key")
    assert config.bearer_token() == "t0k"
    assert config.insecure is False


@pytest.mark.usefixtures("outside_cluster")
def test_a_broken_kubeconfig_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(KubeConfigError, match=r"no kubeconfig at .*absent \(set KUBECONFIG\)"):
        load_config()
    path = write_kubeconfig(tmp_path, {"insecure-skip-tls-verify": True}, {})
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(KubeConfigError, match="cluster 'c' has no server"):
        load_config()
    doc = yaml.safe_load(path.read_text())
    doc["current-context"] = "nope"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(KubeConfigError, match="current-context 'nope' is not defined"):
        load_config()
    path.write_text("{not: [yaml")
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        load_config()


def service_account(folder: Path, token: str = "sa-token") -> Path:
    folder.mkdir()
    (folder / "token").write_text(token + "\n")
    (folder / "namespace").write_text("tether-system")
    (folder / "ca.crt").write_text("CA")
    return folder


def test_in_cluster_config_from_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sa = service_account(tmp_path / "sa")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "ignored"))
    config = load_config(service_account_dir=sa)
    assert config.server == "https://10.96.0.1:443"
    assert config.namespace == "tether-system"
    assert config.ca_file == str(sa / "ca.crt")
    assert config.bearer_token() == "sa-token"
    # A rotated token is read again once the re-read interval has passed.
    (sa / "token").write_text("rotated")
    assert config.bearer_token() == "sa-token"
    config._token_read_at -= 3600
    assert config.bearer_token() == "rotated"


def test_in_cluster_ipv6_host_is_bracketed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = service_account(tmp_path / "sa")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    assert load_config(service_account_dir=sa).server == "https://[fd00::1]:6443"


def test_resource_paths() -> None:
    assert resource_path("v1", "pods", "ns", "p") == "/api/v1/namespaces/ns/pods/p"
    assert resource_path("v1", "configmaps") == "/api/v1/configmaps"
    assert (
        resource_path("tether.dev/v1alpha1", "workflowruns", "ns", "r", "status")
        == "/apis/tether.dev/v1alpha1/namespaces/ns/workflowruns/r/status"
    )


class Recorder:
    """An httpx transport seam: answers with `handler` and keeps every request."""

    def __init__(self, handler: Any) -> None:
        self.requests: list[httpx.Request] = []
        self._handler = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._handler(request)  # type: ignore[no-any-return]


def client_for(recorder: Recorder, token: str | None = "tok") -> KubeClient:
    config = KubeConfig(server="https://api.test", token=token)
    return KubeClient(config, transport=httpx.MockTransport(recorder))


async def test_requests_carry_the_token_and_count_writes() -> None:
    recorder = Recorder(lambda r: httpx.Response(200, json={"kind": "ConfigMap"}))
    client = client_for(recorder)
    await client.get("/api/v1/namespaces/ns/configmaps/a")
    await client.create("/api/v1/namespaces/ns/configmaps", {"metadata": {"name": "a"}})
    await client.patch("/api/v1/namespaces/ns/configmaps/a", {"data": {"k": "v"}})
    await client.patch("/api/v1/namespaces/ns/configmaps/a", [{"op": "remove"}], "json")
    await client.patch("/api/v1/namespaces/ns/pods/p", {"metadata": {}}, "strategic")
    await client.replace("/api/v1/namespaces/ns/configmaps/a", {"metadata": {"name": "a"}})
    await client.aclose()
    assert client.writes == 5
    assert [r.method for r in recorder.requests] == [
        "GET",
        "POST",
        "PATCH",
        "PATCH",
        "PATCH",
        "PUT",
    ]
    assert all(r.headers["Authorization"] == "Bearer tok" for r in recorder.requests)
    # The API server names a field's writer (managedFields) after the agent's first part.
    assert all(r.headers["User-Agent"].startswith("tether-operator/") for r in recorder.requests)
    assert [r.headers.get("Content-Type") for r in recorder.requests[2:5]] == [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
    ]
    assert json.loads(recorder.requests[2].content) == {"data": {"k": "v"}}


async def test_each_answer_is_told_to_the_observer_by_verb_and_code() -> None:
    recorder = Recorder(
        lambda r: httpx.Response(409 if r.method == "POST" else 200, json={"kind": "Status"})
    )
    client = client_for(recorder)
    seen: list[tuple[str, str]] = []
    client.observe = lambda verb, code: seen.append((verb, code))
    await client.get("/api/v1/namespaces/ns/configmaps/a")
    with pytest.raises(ApiError):
        await client.create("/api/v1/namespaces/ns/configmaps", {"metadata": {"name": "a"}})
    await client.aclose()
    assert seen == [("GET", "200"), ("POST", "409")]


async def test_status_errors_are_decoded() -> None:
    status = {
        "kind": "Status",
        "status": "Failure",
        "reason": "AlreadyExists",
        "message": 'configmaps "a" already exists',
        "code": 409,
    }
    recorder = Recorder(lambda r: httpx.Response(409, json=status))
    client = client_for(recorder, token=None)
    with pytest.raises(ApiError) as caught:
        await client.create("/api/v1/namespaces/ns/configmaps", {})
    error = caught.value
    assert (error.status, error.reason, error.conflict, error.not_found) == (
        409,
        "AlreadyExists",
        True,
        False,
    )
    assert str(error) == '409 AlreadyExists: configmaps "a" already exists'
    assert error.body == status
    assert "Authorization" not in recorder.requests[0].headers


async def test_non_status_errors_keep_the_text() -> None:
    client = client_for(Recorder(lambda r: httpx.Response(502, text="bad gateway from proxy")))
    with pytest.raises(ApiError, match="502 Bad Gateway: bad gateway from proxy"):
        await client.get("/version")


async def test_delete_is_quiet_about_missing_objects_unless_asked() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"kind": "Status", "reason": "NotFound", "message": "gone"})

    recorder = Recorder(handler)
    client = client_for(recorder)
    assert await client.delete("/api/v1/namespaces/ns/pods/p", propagation="Background") is None
    body = json.loads(recorder.requests[0].content)
    assert body == {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    with pytest.raises(ApiError, match="404 NotFound: gone"):
        await client.delete(
            "/api/v1/namespaces/ns/pods/p", missing_ok=False, preconditions={"uid": "u"}
        )
    assert json.loads(recorder.requests[1].content)["preconditions"] == {"uid": "u"}


async def test_list_follows_continue_tokens() -> None:
    pages = {
        "": {"items": [{"n": 1}, {"n": 2}], "metadata": {"continue": "page2"}},
        "page2": {"items": [{"n": 3}], "metadata": {"continue": "page3"}},
        "page3": {"items": None, "metadata": {}},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("continue", "")])

    recorder = Recorder(handler)
    client = client_for(recorder)
    items = await client.list(
        "/api/v1/configmaps", label_selector="tether.dev/part=history", field_selector="a=b"
    )
    assert items == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [r.url.params.get("continue") for r in recorder.requests] == [None, "page2", "page3"]
    for request in recorder.requests:
        assert request.url.params["labelSelector"] == "tether.dev/part=history"
        assert request.url.params["fieldSelector"] == "a=b"
        assert request.url.params["limit"] == "500"
    assert client.writes == 0


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_the_api_server_is_reached_over_tls_on_kept_connections(tmp_path: Path) -> None:
    """The production path: no httpx transport given, TLS verified against the
    kubeconfig's CA, connections kept for the next request."""
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    seen: list[bytes] = []
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head)
                body = json.dumps({"kind": "ConfigMapList", "items": []}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    client = KubeClient(
        KubeConfig(server=f"https://localhost:{port}", ca_file=str(cert), token="t")
    )
    try:
        for _ in range(3):
            assert await client.list("/api/v1/configmaps", label_selector="a=b,c in (d)") == []
    finally:
        await client.aclose()
        server.close()
    assert connections == 1
    assert seen[0].startswith(
        b"GET /api/v1/configmaps?limit=500&labelSelector=a%3Db%2Cc+in+%28d%29 "
    )
    assert b"Authorization: Bearer t\r\n" in seen[0]


async def test_an_api_server_with_an_unknown_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    client = KubeClient(KubeConfig(server=f"https://localhost:{port}"), timeout=5)
    try:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get("/version")
    finally:
        await client.aclose()
        server.close()
