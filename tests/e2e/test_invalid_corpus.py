"""Every object of the invalid-resource corpus is refused by the real API server, and
the refusal names the field that is wrong (tests/e2e/invalid_corpus.py).

Server-side dry runs: the API server applies the CRDs' schemas and CEL rules and
stores nothing.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.invalid_corpus import CORPUS, Entry
from tests.e2e.kube import Kube, KubectlError


def refusal(ns: Kube, entry: Entry) -> str | None:
    """Why ``entry`` is wrong in the server's words, or None if it was accepted."""
    _, obj, _ = entry
    try:
        ns.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(obj))
    except KubectlError as exc:
        return str(exc)
    return None


def test_the_corpus_has_over_a_hundred_distinct_bad_objects() -> None:
    ids = [name for name, _, _ in CORPUS]
    assert len(ids) >= 100
    assert len(set(ids)) == len(ids), "ids are object names: each once"
    kinds = {obj["kind"] for _, obj, _ in CORPUS}
    assert kinds == {"Workflow", "WorkflowRun", "WorkerPool", "WorkflowSchedule"}


def test_every_bad_object_is_refused_naming_its_field(crds: list[str], namespace: Kube) -> None:
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda e: refusal(namespace, e), CORPUS))
    accepted = [name for (name, _, _), why in zip(CORPUS, answers, strict=True) if why is None]
    unnamed = [
        f"{name}: wanted {field!r} in {why!r}"
        for (name, _, field), why in zip(CORPUS, answers, strict=True)
        if why is not None and field not in why
    ]
    assert not unnamed, "refusals that do not name the field:\n" + "\n".join(unnamed)
    assert not accepted, f"accepted by the API server: {accepted}"
