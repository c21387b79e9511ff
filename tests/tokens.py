"""A fixed-token `Authenticator` for tests of a scheduler behind a `Gate`: each token
names a user and the (verb, resource, namespace) it may act on. It is the seam the
Kubernetes authenticator (TokenReview, SubjectAccessReview) plugs into."""

from __future__ import annotations

from tether_operator.scheduler.auth import Forbidden, Principal, Unauthenticated
from worker_runtime.protocol import RegisterWorkerRequest

Right = tuple[str, str, str]
"""(verb, resource, namespace)."""


class Tokens:
    """Users by token, with their rights; an unknown token is `Unauthenticated`."""

    def __init__(self, rights: dict[str, set[Right]]) -> None:
        self.rights = rights

    async def authenticate(self, token: str) -> Principal:
        if token not in self.rights:
            raise Unauthenticated("the token was not accepted: get a new one")
        return Principal(username=token)

    async def allows(
        self, principal: Principal, verb: str, resource: str, namespace: str | None
    ) -> bool:
        return (verb, resource, namespace or "") in self.rights[principal.username]

    async def check_registration(self, principal: Principal, req: RegisterWorkerRequest) -> None:
        raise Forbidden("no worker registers through this door")
