"""Pure helpers: field paths, cursors, scopes, key hashing, fingerprints, JSON log lines."""

from __future__ import annotations

import io
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ar_web import (
    ProblemError,
    configure_logging,
    correlation_id_var,
    decode_cursor,
    encode_cursor,
    fingerprint,
)
from ar_web.auth import ALL_SCOPES, generate_api_key, hash_api_key, parse_scopes, validate_key_format
from ar_web.middleware import find_lone_surrogate
from ar_web.problems import field_path


def test_field_path_renders_indexes_and_strips_location() -> None:
    assert field_path(("body", "lines", 0, "quantity")) == ("body", "lines[0].quantity")
    assert field_path(("query", "limit")) == ("query", "limit")
    assert field_path(("body",)) == ("body", "")
    assert field_path((0, "a")) == (None, "[0].a")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=10,
)


@given(json_values)
def test_cursor_round_trips(position: object) -> None:
    cursor = encode_cursor(position)
    assert "=" not in cursor
    assert decode_cursor(cursor) == position


@pytest.mark.parametrize("bad", ["%%%", "!!", "bm90IGpzb24"])
def test_tampered_cursor_is_a_400_problem(bad: str) -> None:
    with pytest.raises(ProblemError) as info:
        decode_cursor(bad)
    assert info.value.status == 400
    assert info.value.field == "cursor"


def test_generated_keys_are_valid_distinct_and_hash_to_hex() -> None:
    a, b = generate_api_key(), generate_api_key()
    assert a != b
    assert a.startswith("ar_")
    validate_key_format(a)
    assert len(hash_api_key(a)) == 64
    assert hash_api_key(a) != hash_api_key(b)


@pytest.mark.parametrize("bad", ["short", "xx_" + "a" * 40, "ar_ with space " + "a" * 30])
def test_malformed_explicit_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_key_format(bad)


def test_parse_scopes_accepts_commas_spaces_and_all() -> None:
    assert parse_scopes("b,a a") == ["a", "b"]
    assert parse_scopes("all") == sorted(ALL_SCOPES)
    assert parse_scopes(["ops", " ops "]) == ["ops"]


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_json_log_line_carries_service_correlation_and_extras() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("thing-svc", "INFO", stream=stream)
    token = correlation_id_var.set("corr-42")
    try:
        logging.getLogger("thing.test").info("hello %s", "world", extra={"invoice_id": "inv_1"})
    finally:
        correlation_id_var.reset(token)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    entry = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert entry["message"] == "hello world"
    assert entry["service"] == "thing-svc"
    assert entry["logger"] == "thing.test"
    assert entry["level"] == "INFO"
    assert entry["correlation_id"] == "corr-42"
    assert entry["invoice_id"] == "inv_1"
    assert entry["time"].endswith("+00:00")


@given(st.text())
def test_json_of_real_text_never_has_a_lone_surrogate(text: str) -> None:
    assume_text = text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
    for ensure_ascii in (True, False):
        body = json.dumps({"name": assume_text, "k\\u": "\\ud800"}, ensure_ascii=ensure_ascii).encode(
            "utf-8", errors="surrogatepass"
        )
        assert find_lone_surrogate(body) is None


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (rb'{"a": "\udb6a"}', "\\udb6a"),
        (rb'{"a": "\ude00 tail"}', "\\ude00"),
        (rb'{"a": "\ud83d\ude00 then \uDC01"}', "\\udc01"),
        (rb'{"a": "\\\udb6a"}', "\\udb6a"),
        (rb'{"a": "\\udb6a"}', None),
        (rb'{"a": "\ud83d\ude00"}', None),
    ],
)
def test_lone_surrogate_escapes_are_found(body: bytes, found: str | None) -> None:
    assert find_lone_surrogate(body) == found


def test_correlation_scope_sets_and_restores() -> None:
    from ar_web import correlation_scope, current_correlation_id

    assert current_correlation_id() is None
    with correlation_scope("evt-corr") as cid:
        assert cid == "evt-corr" == current_correlation_id()
        with correlation_scope(None) as inner:
            assert inner != "evt-corr" and current_correlation_id() == inner
        assert current_correlation_id() == "evt-corr"
    assert current_correlation_id() is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer ar_abc"}, "ar_abc"),
        ({"authorization": "bearer   ar_abc "}, "ar_abc"),
        ({"x-api-key": "ar_xyz"}, "ar_xyz"),
        ({"authorization": "Basic dXNlcjpwdw==", "x-api-key": "ar_xyz"}, "ar_xyz"),
        ({"authorization": "Bearer ar_abc", "x-api-key": "ar_xyz"}, "ar_abc"),
        ({"authorization": "Bearer "}, None),
        ({"authorization": "Basic dXNlcjpwdw=="}, None),
        ({}, None),
    ],
)
def test_the_key_is_read_from_bearer_first_then_x_api_key(
    headers: dict[str, str], expected: str | None
) -> None:
    from starlette.requests import Request

    from ar_web.auth import _presented_key

    scope = {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    assert _presented_key(Request(scope)) == expected
