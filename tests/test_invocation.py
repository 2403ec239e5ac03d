"""The engine <-> step-runtime contract: versioned Invocation and ResultRecord documents."""

from __future__ import annotations

import json

import pytest

from argosy.errors import ExecutionError
from argosy.runtime.invocation import (
    FAILED,
    SUCCEEDED,
    CodeRef,
    Invocation,
    OutputRecord,
    ResultRecord,
    StoreAccess,
)

INVOCATION = Invocation(
    tenant="team-a", run_id="R1", node_path="train", attempt=2, attempt_id="A2",
    store=StoreAccess("s3://bucket/pfx", {"endpoint_url": "http://127.0.0.1:9000"}),
    cache_dir="/cache", step={"name": "train", "implementation": {"kind": "python"}},
    code=CodeRef("sha256:ab", ["src"]), inputs={"n": {"value": 3}},
    result_key="runs/R1/train/2/result.json", scratch="/scratch",
)  # fmt: skip
RESULT = ResultRecord(
    attempt_id="A2", attempt=2, status=SUCCEEDED, started_at="2026-01-01T00:00:00+00:00",
    finished_at="2026-01-01T00:00:01+00:00", peak_memory=1024,
    outputs={"model": OutputRecord("ab" * 32, 10, "int", "json", json_text="7")},
)  # fmt: skip


@pytest.mark.parametrize("document", [INVOCATION, RESULT], ids=["invocation", "result"])
def test_a_document_survives_its_json_round_trip(document: Invocation | ResultRecord) -> None:
    text = json.dumps(document.to_json())
    assert type(document).from_json(json.loads(text)) == document
    assert json.loads(text)["version"] == 1


def test_the_invocation_keeps_the_documented_wire_names() -> None:
    doc = INVOCATION.to_json()
    assert doc["store"] == {
        "url": "s3://bucket/pfx",
        "options": {"endpoint_url": "http://127.0.0.1:9000"},
    }
    assert doc["code"] == {"sha256": "sha256:ab", "paths": ["src"]}
    assert "encryption" not in doc
    assert RESULT.to_json()["outputs"]["model"]["json"] == "7"


def test_a_document_without_a_version_is_version_one() -> None:
    doc = {"attempt_id": "A", "attempt": 1, "status": "failed", "started_at": None,
           "reason": "exception", "error": "boom"}  # fmt: skip
    record = ResultRecord.from_json(doc)
    assert record.status == FAILED and not record.succeeded and record.outputs == {}


@pytest.mark.parametrize("document", [INVOCATION, RESULT], ids=["invocation", "result"])
def test_an_unknown_version_is_refused_saying_what_to_do(
    document: Invocation | ResultRecord,
) -> None:
    doc = dict(document.to_json(), version=2)
    with pytest.raises(ExecutionError, match=r"version 2 is not known .* reads version 1\): run"):
        type(document).from_json(doc)
