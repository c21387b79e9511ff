"""kopf's credentials: the same cluster and identity as our own `KubeClient`."""

from __future__ import annotations

from typing import Any

import kopf

from tether_operator.k8s.api.client import KubeConfig, load_config

__all__ = ["connection_info", "register_login"]


def connection_info(config: KubeConfig) -> kopf.ConnectionInfo:
    """`config` (from `client.load_config()`) as kopf connection info."""
    return kopf.ConnectionInfo(
        server=config.server,
        ca_path=config.ca_file,
        insecure=config.insecure,
        scheme="Bearer" if config.bearer_token() else None,
        token=config.bearer_token(),
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        default_namespace=config.namespace,
    )


def register_login(registry: kopf.OperatorRegistry) -> None:
    """Log kopf in with `load_config()` (re-read on each login, so rotated tokens work)."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(load_config())
