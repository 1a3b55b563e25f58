"""Templates: every key in every language, locale formatting, fallback, strictness and the sandbox."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from babel import Locale
from babel.numbers import format_currency
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape

from ar_events.money import CURRENCY_EXPONENTS
from ar_events.samples import SAMPLES
from notify_svc.rendering import (
    LANGUAGES,
    TEMPLATE_KEYS,
    Renderer,
    RenderError,
    build_context,
    client_locale,
    format_money,
    to_decimal,
)

KINDS = {
    "upcoming": ("reminder", "ar.dunning.reminder_requested.v1"),
    "overdue-1": ("reminder", "ar.dunning.reminder_requested.v1"),
    "overdue-2": ("reminder", "ar.dunning.reminder_requested.v1"),
    "final-notice": ("agency_warning", "ar.dunning.agency_warning_issued.v1"),
    "invoice-issued": ("invoice", "ar.invoice.issued.v1"),
    "payment-receipt": ("receipt", "ar.payment.received.v1"),
    "task-assigned": ("task", "ar.dunning.manual_task_created.v1"),
}


def _ctx(
    key: str,
    lang: str = "en",
    client_name: str = "Boulangerie Martin",
    country: str = "FR",
    sender_kind: str = "ar_mailbox",
) -> dict[str, Any]:
    kind, type_ = KINDS[key]
    return build_context(
        kind=kind,
        payload=SAMPLES[type_],
        client_name=client_name,
        client_id="cli_1",
        recipient_name="Paul",
        recipient="paul@x.example",
        sender_name="Claire Dubois",
        sender_email="claire@x.example",
        sender_kind=sender_kind,
        company="ACME AR",
        locale=client_locale(lang, country),
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("key", TEMPLATE_KEYS)
def test_every_shipped_template_renders_all_three_parts(renderer: Renderer, key: str, lang: str) -> None:
    out = renderer.render(key, lang, _ctx(key, lang))
    assert out.language == lang
    assert out.subject and "\n" not in out.subject
    assert "Paul" in out.text and "Paul" in out.html
    assert out.html.lstrip().startswith("<!DOCTYPE html>")


def test_consolidated_reminder_lists_every_invoice_totals_oldest_and_pay_link(renderer: Renderer) -> None:
    out = renderer.render("overdue-1", "fr", _ctx("overdue-1", "fr"))
    for text in (out.text, out.html):
        assert "F-2026-0017" in text and "F-2026-0031" in text
        assert "1\u202f650,50\u00a0€" in text or "1 650,50 €" in text  # total open, fr formatting
        assert "https://pay.example.com/c/cli_01HQ3ZK8" in text
    assert "Plus ancienne facture échue: F-2026-0017" in out.text
    assert "14 février 2026" in out.text


def test_final_notice_names_the_deadline_and_is_firm(renderer: Renderer) -> None:
    out = renderer.render(
        "final-notice", "en", _ctx("final-notice", "en", country="GB", sender_kind="account_manager")
    )
    assert "12 March 2026" in out.subject and "12 March 2026" in out.text
    assert "collections agency" in out.text
    assert "claire@x.example" in out.text  # escalated: signed by the account manager with their address


def test_polite_first_reminder(renderer: Renderer) -> None:
    out = renderer.render("overdue-1", "en", _ctx("overdue-1", "en", country="US"))
    assert "grateful" in out.text and "collections" not in out.text
    assert "€1,200.00" in out.text  # en_US formatting of EUR


def test_unknown_language_falls_back_to_english_and_regional_to_base(renderer: Renderer) -> None:
    assert renderer.render("overdue-2", "es", _ctx("overdue-2", "es")).language == "en"
    assert renderer.render("overdue-2", "fr-CA", _ctx("overdue-2", "fr", country="CA")).language == "fr"


def test_missing_variable_is_an_error_not_a_half_message(renderer: Renderer) -> None:
    ctx = _ctx("overdue-1")
    del ctx["statement"]
    with pytest.raises(RenderError, match="statement"):
        renderer.render("overdue-1", "en", ctx)


def test_unknown_template_key_is_an_error(renderer: Renderer) -> None:
    with pytest.raises(RenderError):
        renderer.render("no-such-template", "en", _ctx("overdue-1"))
    with pytest.raises(RenderError):
        renderer.render("../../etc/passwd", "en", _ctx("overdue-1"))


INJECTIONS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ client.__class__.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_client_field_with_template_syntax_is_inert_text(renderer: Renderer, payload: str) -> None:
    out = renderer.render("overdue-1", "en", _ctx("overdue-1", client_name=payload))
    assert payload in out.text  # shown literally, never evaluated
    assert str(escape(payload)) in out.html
    assert "<class" not in out.text and "&lt;class" not in out.html
    assert "object" not in out.text.replace(payload, "")


def test_client_field_is_html_escaped(renderer: Renderer) -> None:
    out = renderer.render("overdue-1", "en", _ctx("overdue-1", client_name="<script>alert(1)</script>"))
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert "<script>alert(1)</script>" in out.text  # plain text is not HTML


@pytest.mark.parametrize("payload", INJECTIONS)
def test_override_template_cannot_reach_python_internals(tmp_path: Path, payload: str) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "overdue-1.subject.txt").write_text("Hello " + payload)
    renderer = Renderer(override_dir=tmp_path)
    with pytest.raises(RenderError) as info:
        renderer.render("overdue-1", "en", _ctx("overdue-1"))
    assert "<class" not in str(info.value)


def test_override_directory_wins_and_falls_through_per_file(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "overdue-1.subject.txt").write_text("Custom: {{ statement.overdue_text }}")
    out = Renderer(override_dir=tmp_path).render("overdue-1", "en", _ctx("overdue-1", country="US"))
    assert out.subject == "Custom: €1,200.00"
    assert "F-2026-0017" in out.text  # the body still comes from the built-in template


def test_money_uses_the_currency_exponent() -> None:
    loc = client_locale("en", "US")
    assert format_money({"amount_minor": 123456, "currency": "JPY"}, loc) == "¥123,456"
    assert format_money({"amount_minor": 123456, "currency": "KWD"}, loc).endswith("123.456")
    assert (
        format_money({"amount_minor": 123456, "currency": "EUR"}, client_locale("de", "DE"))
        == "1.234,56\u00a0€"
    )


@given(
    amount=st.integers(min_value=-(10**15), max_value=10**15),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
)
def test_minor_units_convert_exactly(amount: int, currency: str) -> None:
    value = to_decimal(amount, currency)
    assert isinstance(value, Decimal)
    assert value.scaleb(CURRENCY_EXPONENTS[currency]) == amount


LOCALES = [
    "en_US",
    "en_GB",
    "en_IN",
    "fr_FR",
    "fr_CH",
    "fr_CA",
    "de_DE",
    "de_CH",
    "de_AT",
    "ja_JP",
    "nl_NL",
    "es_ES",
    "ar_EG",
    "he_IL",
    "fr",
    "de",
    "en",
]


@given(
    amount=st.integers(min_value=-(10**13), max_value=10**13),
    currency=st.sampled_from(["EUR", "USD", "JPY", "KWD", "CHF", "INR", "GBP", "CLP", "BHD"]),
    locale=st.sampled_from(LOCALES),
)
def test_fast_money_format_equals_babel(amount: int, currency: str, locale: str) -> None:
    loc = Locale.parse(locale)
    expected = format_currency(to_decimal(amount, currency), currency, locale=loc)
    assert format_money({"amount_minor": amount, "currency": currency}, loc) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "{{ statement.update({'x': 1}) }}",
        "{{ statement.pop('invoices') }}",
        "{{ statement.__class__ }}",
        "{{ statement['__class__'] }}",
        "{{ statement.invoices.append(1) }}",
        "{{ statement.items.__self__ }}",
        "{{ client.__init__.__globals__ }}",
    ],
)
def test_view_data_cannot_be_mutated_or_escaped(tmp_path: Path, expression: str) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "overdue-1.subject.txt").write_text("S " + expression)
    with pytest.raises(RenderError):
        Renderer(override_dir=tmp_path).render("overdue-1", "en", _ctx("overdue-1"))


def test_subject_keeps_the_no_break_spaces_of_amounts(renderer: Renderer) -> None:
    out = renderer.render("overdue-1", "fr", _ctx("overdue-1", "fr"))
    assert "1\u202f200,00\u00a0€" in out.subject
