"""The committed JSON Schemas and AsyncAPI document are generated from the models and never stale."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from ar_events import docs
from ar_events.envelope import encode, new_event
from ar_events.events import ALL_TYPES, Payload
from ar_events.samples import SAMPLES
from ar_events.topics import Topic


def test_committed_schemas_and_asyncapi_are_up_to_date() -> None:
    stale = [
        str(path.relative_to(docs.ROOT))
        for path, content in docs.render().items()
        if not path.exists() or path.read_text(encoding="utf-8") != content
    ]
    extra = {p.name for p in docs.SCHEMA_DIR.glob("*.json")} - {f"{c.TYPE}.json" for c in ALL_TYPES}
    assert not stale, f"run `make docs` and commit: stale {stale}"
    assert not extra, f"schemas for types that no longer exist: {extra}"


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.TYPE)
def test_encoded_records_validate_against_the_committed_schema(cls: type[Payload]) -> None:
    schema = json.loads((docs.SCHEMA_DIR / f"{cls.TYPE}.json").read_text())
    record = json.loads(
        encode(new_event(cls.model_validate(SAMPLES[cls.TYPE]), source="t", time=datetime.now(UTC)))
    )
    jsonschema.validate(record, schema, cls=jsonschema.Draft202012Validator)


def test_schema_rejects_float_money_and_unknown_currency() -> None:
    schema = json.loads((docs.SCHEMA_DIR / "ar.payment.received.v1.json").read_text())
    good = docs._example(next(c for c in ALL_TYPES if c.TYPE == "ar.payment.received.v1"))
    jsonschema.validate(good, schema, cls=jsonschema.Draft202012Validator)
    for field, bad in (("amount_minor", 10.5), ("currency", "EURO"), ("currency", "XYZ")):
        record = json.loads(json.dumps(good))
        record["data"]["amount"][field] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(record, schema, cls=jsonschema.Draft202012Validator)


def test_asyncapi_lists_every_topic_dlq_and_message() -> None:
    doc = json.loads(docs.ASYNCAPI_PATH.read_text())
    assert doc["asyncapi"].startswith("3.")
    addresses = {ch["address"] for ch in doc["channels"].values()}
    for topic in Topic:
        assert topic.value in addresses
        assert f"{topic.value}.dlq" in addresses
    assert {m["name"] for m in doc["components"]["messages"].values()} == {c.TYPE for c in ALL_TYPES}
    for op in doc["operations"].values():
        channel = op["channel"]["$ref"].split("/")[-1]
        assert channel in doc["channels"]
        for ref in op["messages"]:
            assert ref["$ref"].split("/")[-1] in doc["channels"][channel]["messages"]
    for message in doc["components"]["messages"].values():
        ref = message["payload"]["properties"]["data"]["$ref"].split("/")[-1]
        assert ref in doc["components"]["schemas"]
