"""Generate the JSON Schemas (one per event type) and the AsyncAPI 3.0 document from the models.

``make docs`` runs this module; a contract test fails when the committed copies are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from ar_events.envelope import CONTENT_TYPE, Envelope
from ar_events.events import ALL_TYPES, Payload
from ar_events.samples import SAMPLES
from ar_events.topics import Topic, dlq_of

ROOT = Path(__file__).resolve().parents[2]  # libs/events
SCHEMA_DIR = ROOT / "schemas"
ASYNCAPI_PATH = ROOT / "asyncapi.json"

#: Who sends and who receives each topic (design.md section 2).
PRODUCERS: dict[Topic, str] = {
    Topic.INVOICE_EVENTS: "invoice-svc",
    Topic.PAYMENT_EVENTS: "payment-svc",
    Topic.DUNNING_EVENTS: "dunning-svc",
    Topic.DUNNING_COMMANDS: "ops",
    Topic.NOTIFY_EVENTS: "notify-svc",
}
CONSUMERS: dict[Topic, tuple[str, ...]] = {
    Topic.INVOICE_EVENTS: ("dunning-svc", "notify-svc"),
    Topic.PAYMENT_EVENTS: ("invoice-svc", "dunning-svc", "notify-svc"),
    Topic.DUNNING_EVENTS: ("notify-svc",),
    Topic.DUNNING_COMMANDS: ("dunning-svc",),
    Topic.NOTIFY_EVENTS: ("dunning-svc",),
}
_CHANNEL_IDS: dict[Topic, str] = {
    Topic.INVOICE_EVENTS: "invoiceEvents",
    Topic.PAYMENT_EVENTS: "paymentEvents",
    Topic.DUNNING_EVENTS: "dunningEvents",
    Topic.DUNNING_COMMANDS: "dunningCommands",
    Topic.NOTIFY_EVENTS: "notifyEvents",
}


def envelope_schema(cls: type[Payload]) -> dict[str, Any]:
    """The standalone JSON Schema of a whole record value carrying ``cls``."""
    schema = Envelope[cls].model_json_schema(mode="serialization")  # type: ignore[valid-type]
    schema["title"] = cls.__name__
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://ar-dunning.dev/schemas/{cls.TYPE}.json"
    props = schema["properties"]
    props["type"] = {"const": cls.TYPE, "type": "string", "title": "Type"}
    props["datacontenttype"]["const"] = "application/json"
    schema["description"] = (cls.__doc__ or "").strip() or f"CloudEvents envelope of {cls.TYPE}"
    schema["x-topic"] = cls.TOPIC.value
    return schema


def json_schemas() -> dict[str, dict[str, Any]]:
    return {cls.TYPE: envelope_schema(cls) for cls in ALL_TYPES}


def _example(cls: type[Payload]) -> dict[str, Any]:
    data = SAMPLES[cls.TYPE]
    return {
        "specversion": "1.0",
        "id": "6c1c2f0e-7f0a-4d4b-9f55-0d8c8f0e2a11",
        "source": PRODUCERS[cls.TOPIC],
        "type": cls.TYPE,
        "time": "2026-03-02T09:30:00Z",
        "subject": data["client_id"],
        "datacontenttype": "application/json",
        "correlationid": "1f0e5b9a-2d43-4c1e-8a51-6b7f3c2d9e10",
        "data": data,
    }


def asyncapi() -> dict[str, Any]:
    """AsyncAPI 3.0 document for the whole system: five topics, their DLQs, every message."""
    _, defs = models_json_schema(
        [(cls, "serialization") for cls in ALL_TYPES], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    messages: dict[str, Any] = {}
    for cls in ALL_TYPES:
        name = cls.__name__
        messages[name] = {
            "name": cls.TYPE,
            "title": name,
            "summary": (cls.__doc__ or name).strip().splitlines()[0],
            "contentType": CONTENT_TYPE,
            "correlationId": {"location": "$message.payload#/correlationid"},
            "bindings": {"kafka": {"key": {"type": "string", "description": "The client id (= subject)"}}},
            "payload": {
                "type": "object",
                "description": "CloudEvents 1.0 envelope, structured JSON mode",
                "required": [
                    "specversion",
                    "id",
                    "source",
                    "type",
                    "time",
                    "subject",
                    "correlationid",
                    "data",
                ],
                "properties": {
                    "specversion": {"const": "1.0"},
                    "id": {"type": "string", "format": "uuid"},
                    "source": {"type": "string"},
                    "type": {"const": cls.TYPE},
                    "time": {"type": "string", "format": "date-time"},
                    "subject": {"type": "string", "description": "client id"},
                    "datacontenttype": {"const": "application/json"},
                    "correlationid": {"type": "string"},
                    "causationid": {"type": "string"},
                    "data": {"$ref": f"#/components/schemas/{name}"},
                },
            },
            "examples": [
                {"name": f"{name}Example", "key": SAMPLES[cls.TYPE]["client_id"], "payload": _example(cls)}
            ],
        }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in Topic:
        cid = _CHANNEL_IDS[topic]
        refs = {
            cls.__name__: {"$ref": f"#/components/messages/{cls.__name__}"}
            for cls in ALL_TYPES
            if cls.TOPIC is topic
        }
        channels[cid] = {
            "address": topic.value,
            "description": f"Keyed by client id. Produced by {PRODUCERS[topic]}; consumed by "
            + ", ".join(CONSUMERS[topic])
            + ".",
            "messages": refs,
            "bindings": {"kafka": {"topic": topic.value, "partitions": 6}},
        }
        channels[cid + "Dlq"] = {
            "address": dlq_of(topic.value),
            "description": "Records a consumer gave up on. Headers: dlq.error, dlq.topic, dlq.partition, "
            "dlq.offset, dlq.attempts, dlq.consumer. The value is the original record value, unchanged.",
            "bindings": {"kafka": {"topic": dlq_of(topic.value), "partitions": 6}},
        }
        msg_refs = [{"$ref": f"#/channels/{cid}/messages/{m}"} for m in refs]
        operations[f"{PRODUCERS[topic]}.send.{topic.value}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"{PRODUCERS[topic]} publishes through its transactional outbox",
            "messages": msg_refs,
        }
        for consumer in CONSUMERS[topic]:
            operations[f"{consumer}.receive.{topic.value}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"{consumer} consumes idempotently (inbox) in group {consumer}",
                "messages": msg_refs,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ar-dunning events",
            "version": "1.0.0",
            "description": "Every event and command of the dunning platform. Generated from libs/events "
            "(python -m ar_events.docs); do not edit by hand.",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "dev": {
                "host": "127.0.0.1:19092",
                "protocol": "kafka",
                "description": "embedded broker (make up)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> dict[Path, str]:
    """Every generated file and its exact content."""
    out = {
        SCHEMA_DIR / f"{name}.json": json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, schema in json_schemas().items()
    }
    out[ASYNCAPI_PATH] = json.dumps(asyncapi(), indent=2, ensure_ascii=False) + "\n"
    return out


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    files = render()
    for stale in set(SCHEMA_DIR.glob("*.json")) - set(files):
        stale.unlink()
    for path, content in files.items():
        path.write_text(content, encoding="utf-8")
    print(f"wrote {len(files) - 1} JSON Schemas to {SCHEMA_DIR} and {ASYNCAPI_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
