"""Large values of a run's history, in chunked ConfigMaps owned by the run.

A ConfigMap holds at most 1 MiB and an activity result may be 2 MiB. A payload is the
value's compact JSON, gzip-compressed and cut into chunks of `CHUNK_BYTES`; chunk `i`
is the ConfigMap `<run>-p<id>-<i>` with the bytes in `binaryData.gz`. `<id>` is the
start of the JSON's sha256, so a payload is content-addressed: writing it again (a
retried append) finds the same objects, and `get` checks the digest it reads back.
A reference (`ref`) is a small dict: `{id, sha256, chunks, bytes}`.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
from typing import Any

from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.store.objects import config_map, object_name, owner_uid
from tether_operator.store.errors import PayloadMissing

__all__ = ["CHUNK_BYTES", "PayloadStore"]

CHUNK_BYTES = 768 * 1024
"""Compressed bytes per chunk: under the 1 MiB ConfigMap limit with room to spare."""
THREAD_BYTES = 64 * 1024
"""Compressing more than this moves to a thread, so the event loop keeps running."""
ID_LENGTH = 16


def _pack(text: str) -> tuple[str, list[bytes]]:
    raw = text.encode()
    digest = hashlib.sha256(raw).hexdigest()
    packed = gzip.compress(raw, compresslevel=6, mtime=0)
    chunks = [packed[i : i + CHUNK_BYTES] for i in range(0, len(packed), CHUNK_BYTES)]
    return digest, chunks or [b""]


def _unpack(chunks: list[bytes]) -> tuple[str, Any]:
    raw = gzip.decompress(b"".join(chunks))
    return hashlib.sha256(raw).hexdigest(), json.loads(raw)


def _chunk_name(run_name: str, payload_id: str, index: int) -> str:
    return object_name(run_name, f"p{payload_id}-{index}")


class PayloadStore:
    """Writes and reads payload ConfigMaps through one `KubeClient`."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def put(
        self,
        run_id: str,
        namespace: str,
        run_name: str,
        uid: str,
        text: str,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Store the JSON `text` for the run (owned by WorkflowRun `owner`, default
        `run_name`, with uid `uid`); the reference to it."""
        if len(text) > THREAD_BYTES:
            digest, chunks = await asyncio.to_thread(_pack, text)
        else:
            digest, chunks = _pack(text)
        payload_id = digest[:ID_LENGTH]
        path = paths.configmaps(namespace)
        await asyncio.gather(
            *(
                self._create(
                    run_id,
                    path,
                    config_map(
                        _chunk_name(run_name, payload_id, index),
                        run_name=run_name,
                        uid=uid,
                        part="payload",
                        owner=owner,
                        annotations={
                            "tether.dev/sha256": digest,
                            "tether.dev/chunks": str(len(chunks)),
                        },
                        binary_data={"gz": base64.b64encode(chunk).decode()},
                    ),
                )
                for index, chunk in enumerate(chunks)
            )
        )
        return {"id": payload_id, "sha256": digest, "chunks": len(chunks), "bytes": len(text)}

    async def _create(self, run_id: str, path: str, body: dict[str, Any]) -> None:
        try:
            await self._client.create(path, body)
        except ApiError as exc:
            if not exc.conflict:
                raise
            # Content-addressed: the same name holds the same bytes, unless it is left
            # over from an earlier WorkflowRun of the same name (then it is replaced).
            name = body["metadata"]["name"]
            existing = await self._client.get(f"{path}/{name}")
            uid = body["metadata"]["ownerReferences"][0]["uid"]
            if owner_uid(existing) != uid:
                await self._client.delete(
                    f"{path}/{name}", preconditions={"uid": existing["metadata"]["uid"]}
                )
                await self._client.create(path, body)

    async def get(self, run_id: str, namespace: str, run_name: str, ref: dict[str, Any]) -> Any:
        """The value `ref` refers to; `PayloadMissing` if a chunk is gone or damaged."""
        path = paths.configmaps(namespace)
        names = [_chunk_name(run_name, ref["id"], i) for i in range(int(ref["chunks"]))]
        try:
            objects = await asyncio.gather(*(self._client.get(f"{path}/{n}") for n in names))
        except ApiError as exc:
            if exc.not_found:
                raise PayloadMissing(
                    run_id,
                    f"run {run_id}: payload ConfigMap {namespace}/{names[0]}... "
                    f"({ref['chunks']} chunks) is missing: {exc.message}",
                ) from exc
            raise
        try:
            chunks = [base64.b64decode(o["binaryData"]["gz"]) for o in objects]
            if ref["bytes"] > THREAD_BYTES:
                digest, value = await asyncio.to_thread(_unpack, chunks)
            else:
                digest, value = _unpack(chunks)
        except (KeyError, ValueError, OSError) as exc:
            raise PayloadMissing(
                run_id,
                f"run {run_id}: payload ConfigMaps {namespace}/{names[0]}... are damaged: {exc}",
            ) from exc
        if digest != ref["sha256"]:
            raise PayloadMissing(
                run_id,
                f"run {run_id}: payload ConfigMaps {namespace}/{names[0]}... hold other bytes "
                f"than the history recorded (sha256 {digest[:12]}, expected {ref['sha256'][:12]})",
            )
        return value
