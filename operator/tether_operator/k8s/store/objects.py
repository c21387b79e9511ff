"""Names, labels and owner references of the ConfigMaps the Kubernetes store writes.

Every object belongs to one WorkflowRun: it carries an ownerReference to the run (so
the garbage collector deletes it with the run) and the labels `tether.dev/run`,
`tether.dev/part` (`history` or `payload`) and `app.kubernetes.io/managed-by=tether`.
A child run (started by a workflow, run id `<parent>-c<seq>`) has no WorkflowRun of
its own: its objects are owned by its root run's WorkflowRun (deleted with it), its
`tether.dev/run` label names the child, `tether.dev/root` names the root, and the
annotation `tether.dev/run-name` holds the child's full name.
A run name may be 253 characters long, a label value only 63 and an object name 253:
long names are shortened with a hash, and the full name is in the ownerReference.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from tether_operator.k8s.resources.specs import API_VERSION

__all__ = [
    "LABEL_MANAGED_BY",
    "LABEL_PART",
    "LABEL_ROOT",
    "LABEL_RUN",
    "RUN_NAME_ANNOTATION",
    "Part",
    "config_map",
    "object_name",
    "owner_run",
    "owner_uid",
    "run_label",
    "selector",
    "stored_run",
]

LABEL_RUN = "tether.dev/run"
LABEL_PART = "tether.dev/part"
LABEL_ROOT = "tether.dev/root"
"""On a child run's objects: the root run (the WorkflowRun that owns them)."""
RUN_NAME_ANNOTATION = "tether.dev/run-name"
"""On a child run's objects: the child's full run name (labels may be shortened)."""
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "tether"
RUN_KIND = "WorkflowRun"
MAX_LABEL_VALUE = 63
MAX_OBJECT_NAME = 253

Part = Literal["history", "payload"]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _shorten(name: str, limit: int) -> str:
    """`name` if it fits in `limit` characters, else a prefix of it and a hash."""
    if len(name) <= limit:
        return name
    # A DNS name part must end alphanumeric: strip a cut that leaves "-" or ".".
    stem = name[: limit - 11].rstrip("-.")
    return f"{stem}-{_digest(name)}"


def run_label(run_name: str) -> str:
    """The `tether.dev/run` label value for a run (shortened when over 63 characters)."""
    return _shorten(run_name, MAX_LABEL_VALUE)


def object_name(run_name: str, suffix: str) -> str:
    """`<run>-<suffix>`, shortened with a hash to stay a valid 253-character name."""
    return f"{_shorten(run_name, MAX_OBJECT_NAME - len(suffix) - 1)}-{suffix}"


def selector(run_name: str | None = None, part: Part | None = None) -> str:
    """A label selector for the store's objects: of one run and/or of one part."""
    terms = [f"{LABEL_MANAGED_BY}={MANAGED_BY}"]
    if part is not None:
        terms.append(f"{LABEL_PART}={part}")
    if run_name is not None:
        terms.append(f"{LABEL_RUN}={run_label(run_name)}")
    return ",".join(terms)


def config_map(
    name: str,
    *,
    run_name: str,
    uid: str,
    part: Part,
    owner: str | None = None,
    annotations: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
    binary_data: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ConfigMap of run `run_name`, owned by WorkflowRun `owner` (default: `run_name`;
    a child run's root otherwise) with uid `uid`."""
    owner = owner or run_name
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": {
                LABEL_RUN: run_label(run_name),
                LABEL_PART: part,
                LABEL_MANAGED_BY: MANAGED_BY,
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": RUN_KIND,
                    "name": owner,
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
    }
    if owner != run_name:
        body["metadata"]["labels"][LABEL_ROOT] = run_label(owner)
        annotations = {**(annotations or {}), RUN_NAME_ANNOTATION: run_name}
    if annotations:
        body["metadata"]["annotations"] = annotations
    if data is not None:
        body["data"] = data
    if binary_data is not None:
        body["binaryData"] = binary_data
    return body


def owner_run(obj: dict[str, Any]) -> tuple[str, str] | None:
    """`(name, uid)` of the WorkflowRun that owns `obj`, or None."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == RUN_KIND and ref.get("apiVersion") == API_VERSION:
            return str(ref["name"]), str(ref["uid"])
    return None


def owner_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the WorkflowRun that owns `obj`, or None."""
    owner = owner_run(obj)
    return owner[1] if owner else None


def stored_run(obj: dict[str, Any]) -> str | None:
    """The name of the run `obj` belongs to: a child's own name, else its owner's; None
    for an object no WorkflowRun owns."""
    owner = owner_run(obj)
    if owner is None:
        return None
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(RUN_NAME_ANNOTATION) or owner[0])
