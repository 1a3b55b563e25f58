"""Templates: Jinja2 in an immutable sandbox, HTML autoescaped, StrictUndefined, money and dates via babel.

A template key and a language select three files: ``<lang>/<key>.subject.txt``, ``<lang>/<key>.txt`` and
``<lang>/<key>.html``. Lookup order: the override directory, then the built-in templates; within each,
``fr_CA`` then ``fr`` then English. Templates see only plain strings, numbers, lists and dicts built here
(never ORM rows or models), so the sandbox has nothing interesting to reach.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_percent, get_currency_symbol, get_decimal_symbol, get_group_symbol
from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    select_autoescape,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ar_events.money import CURRENCY_EXPONENTS
from notify_svc.domain.notifications import Kind

BUILTIN_DIR = Path(__file__).parent / "templates"
TEMPLATE_KEYS = (
    "upcoming", "overdue-1", "overdue-2", "final-notice", "invoice-issued", "payment-receipt", "task-assigned",
)  # fmt: skip
LANGUAGES = ("en", "fr", "de")
_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

#: Runs of ASCII whitespace (CR/LF included) only: amounts keep their no-break spaces.
_ASCII_SPACE = re.compile(r"[ \t\r\n\f\v]+")


class View(dict[str, Any]):
    """The data templates see: plain values built here, read as ``line.number`` or ``line["number"]``."""

    __slots__ = ()


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with a fast path for our own view data.

    A key of a :class:`View` is data we built (strings, numbers, lists, Views), so reading it needs no safety
    check; anything else, including every method of the view itself, goes through the full sandbox.
    Jinja tries ``getattr`` before ``[]`` and the sandbox checks each attribute against mutable ABCs, which
    made attribute lookups the largest cost of rendering a consolidated statement.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is View and attribute in obj and not attribute.startswith("_"):
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if (
            type(obj) is View
            and isinstance(argument, str)
            and argument in obj
            and not argument.startswith("_")
        ):
            return obj[argument]
        return super().getitem(obj, argument)


class RenderError(Exception):
    """A template is missing, broken, refers to an unknown variable, or tried something the sandbox forbids."""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str
    language: str


@lru_cache(maxsize=256)
def client_locale(language: str, country: str | None = None) -> Locale:
    """The babel locale for a client: language plus country when that pair exists (fr + CH -> fr_CH)."""
    lang = language.replace("-", "_")
    candidates = []
    if country and "_" not in lang:
        candidates.append(f"{lang}_{country}")
    candidates += [lang, lang.split("_")[0], "en"]
    for cand in candidates:
        try:
            return Locale.parse(cand)
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse("en")  # pragma: no cover


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Minor units to an exact Decimal by the currency's ISO 4217 exponent: 123456 EUR -> 1234.56."""
    return Decimal(amount_minor).scaleb(-CURRENCY_EXPONENTS.get(currency, 2))


@dataclass(frozen=True, slots=True)
class MoneyFormat:
    """A locale's currency pattern, resolved once: formatting an amount is then string work on integers.

    Same output as ``babel.numbers.format_currency`` (a property test holds them equal) at a tenth of the cost,
    which matters with a dozen amounts per consolidated message.
    """

    prefix: tuple[str, str]  # (positive, negative)
    suffix: tuple[str, str]
    decimal: str
    group: str
    primary: int
    secondary: int
    digits: int

    def format(self, amount_minor: int) -> str:
        negative = amount_minor < 0
        units, frac = divmod(abs(amount_minor), 10**self.digits)
        text = str(units)
        if len(text) > self.primary:
            head, groups = text[: -self.primary], [text[-self.primary :]]
            while len(head) > self.secondary:
                groups.insert(0, head[-self.secondary :])
                head = head[: -self.secondary]
            text = self.group.join([head, *groups])
        if self.digits:
            text += self.decimal + str(frac).rjust(self.digits, "0")
        return f"{self.prefix[negative]}{text}{self.suffix[negative]}"


@lru_cache(maxsize=1024)
def money_format(currency: str, locale: Locale) -> MoneyFormat:
    pattern = locale.currency_formats["standard"]
    symbol = get_currency_symbol(currency, locale)

    def sub(affix: str) -> str:
        return affix.replace("¤¤", currency).replace("¤", symbol)

    return MoneyFormat(
        prefix=(sub(pattern.prefix[0]), sub(pattern.prefix[1])),
        suffix=(sub(pattern.suffix[0]), sub(pattern.suffix[1])),
        decimal=get_decimal_symbol(locale),
        group=get_group_symbol(locale),
        primary=pattern.grouping[0],
        secondary=pattern.grouping[1],
        digits=CURRENCY_EXPONENTS.get(currency, 2),
    )


def _money(amount_minor: int, currency: str, locale: Locale) -> str:
    return money_format(currency, locale).format(amount_minor)


def format_money(money: dict[str, Any], locale: Locale) -> str:
    """``{"amount_minor": 123456, "currency": "EUR"}`` for fr -> ``1 234,56 €``."""
    return _money(int(money["amount_minor"]), str(money["currency"]), locale)


@lru_cache(maxsize=4096)
def _date(value: str, locale: Locale) -> str:
    return str(format_date(date.fromisoformat(value), format="long", locale=locale))


def format_day(value: str | date | None, locale: Locale) -> str:
    if value is None:
        return ""
    return _date(value.isoformat() if isinstance(value, date) else value[:10], locale)


def format_moment(value: str, locale: Locale) -> str:
    return str(format_datetime(datetime.fromisoformat(value), format="medium", locale=locale))


def _join(amounts: list[str]) -> str:
    return " + ".join(amounts)


def statement_view(statement: dict[str, Any], locale: Locale) -> dict[str, Any]:
    """The consolidated statement as the templates see it: every open invoice, totals per currency, the oldest."""
    lines = []
    oldest = None
    for line in statement.get("invoices", ()):
        view = View(
            {
                "number": str(line["number"]),
                "issue_date": format_day(line.get("issue_date"), locale),
                "due_date": format_day(line["due_date"], locale),
                "amount_due": format_money(line["amount_due"], locale),
                "total": format_money(line["total"], locale) if line.get("total") else "",
                "days_overdue": int(line["days_overdue"]),
                "overdue": int(line["days_overdue"]) > 0,
                "disputed": bool(line.get("disputed", False)),
                "oldest": line["invoice_id"] == statement.get("oldest_overdue_invoice_id"),
            }
        )
        if view["oldest"]:
            oldest = view
        lines.append(view)
    totals = [format_money(m, locale) for m in statement.get("totals", ())]
    overdue = [format_money(m, locale) for m in statement.get("overdue_totals", ()) if m["amount_minor"]]
    return View(
        {
            "as_of": format_day(statement.get("as_of"), locale),
            "invoices": lines,
            "count": len(lines),
            "totals": totals,
            "total_text": _join(totals),
            "overdue_totals": overdue,
            "overdue_text": _join(overdue) or _join(totals),
            "oldest": oldest,
            "pay_link": statement.get("pay_link") or "",
        }
    )


def build_context(
    *,
    kind: str,
    payload: dict[str, Any],
    client_name: str,
    client_id: str,
    recipient_name: str,
    recipient: str,
    sender_name: str,
    sender_email: str,
    sender_kind: str,
    company: str,
    locale: Locale,
) -> dict[str, Any]:
    """Plain data for a template, by notification kind. Only the variables of that kind exist."""
    ctx: dict[str, Any] = {
        "client": View(name=client_name, id=client_id),
        "recipient": View(name=recipient_name, address=recipient),
        "sender": View(name=sender_name, email=sender_email, escalated=sender_kind == "account_manager"),
        "company": View(name=company),
    }
    if kind in (Kind.REMINDER, Kind.AGENCY_WARNING):
        ctx["statement"] = statement_view(payload["statement"], locale)
        ctx["level"] = int(payload["level"])
        ctx["step"] = int(payload["step"])
        ctx["case_id"] = str(payload["case_id"])
        if kind == Kind.AGENCY_WARNING:
            ctx["deadline"] = format_day(payload["deadline"], locale)
    elif kind == Kind.INVOICE:
        discount = payload.get("early_payment_discount")
        ctx["invoice"] = View(
            {
                "number": str(payload["number"]),
                "issue_date": format_day(payload["issue_date"], locale),
                "due_date": format_day(payload["due_date"], locale),
                "total": format_money(payload["total"], locale),
                "amount_due": format_money(payload["amount_due"], locale),
                "tax": format_money(payload["tax"], locale),
                "pay_link": payload.get("pay_link") or "",
                "discount": View(
                    {
                        "amount": format_money(discount["amount"], locale),
                        "until": format_day(discount["until"], locale),
                        "rate": format_percent_bp(int(discount["rate_bp"]), locale),
                    }
                )
                if discount
                else None,
            }
        )
    elif kind == Kind.RECEIPT:
        ctx["payment"] = View(
            {
                "amount": format_money(payload["amount"], locale),
                "received_at": format_day(payload["received_at"], locale),
                "method": str(payload["method"]),
                "reference": str(payload.get("reference") or payload["payment_id"]),
            }
        )
    elif kind == Kind.TASK:
        overdue = [format_money(m, locale) for m in payload.get("overdue_totals", ())]
        ctx["task"] = View(
            {
                "id": str(payload["task_id"]),
                "kind": str(payload["kind"]),
                "client_name": client_name,
                "overdue_totals": overdue,
                "overdue_text": _join(overdue),
                "case_url": payload.get("case_url") or "",
                "sla_due_at": format_moment(payload["sla_due_at"], locale)
                if payload.get("sla_due_at")
                else "",
                "priority": int(payload["priority"]),
                "note": payload.get("note") or "",
            }
        )
    return ctx


def format_percent_bp(bp: int, locale: Locale) -> str:
    return str(format_percent(Decimal(bp).scaleb(-4), format="#,##0.##%", locale=locale))


class Renderer:
    """Renders a template key in a language; built once per process."""

    def __init__(self, override_dir: Path | None = None, default_language: str = "en") -> None:
        loaders = [FileSystemLoader(str(override_dir))] if override_dir else []
        loaders.append(FileSystemLoader(str(BUILTIN_DIR)))
        self.default_language = default_language
        self.env = _Sandbox(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            keep_trailing_newline=False,
        )
        self._cache: dict[tuple[str, str], tuple[str, Template, Template, Template]] = {}

    def _candidates(self, language: str) -> list[str]:
        lang = language.replace("-", "_")
        out = [lang, lang.split("_")[0], self.default_language, "en"]
        return list(dict.fromkeys(out))

    def _templates(self, key: str, language: str) -> tuple[str, Template, Template, Template]:
        cached = self._cache.get((key, language))
        if cached is not None:
            return cached
        if not _KEY_RE.match(key):
            raise RenderError(f"invalid template key {key!r}")
        last: Exception | None = None
        for lang in self._candidates(language):
            try:
                found = (
                    lang,
                    self.env.get_template(f"{lang}/{key}.subject.txt"),
                    self.env.get_template(f"{lang}/{key}.txt"),
                    self.env.get_template(f"{lang}/{key}.html"),
                )
            except TemplateError as exc:  # TemplateNotFound or a syntax error
                last = exc
                if not isinstance(exc, TemplateNotFound):
                    raise RenderError(f"template {lang}/{key}: {exc}") from exc
                continue
            self._cache[(key, language)] = found
            return found
        raise RenderError(f"no template {key!r} for language {language!r} or English: {last}")

    def render(self, key: str, language: str, context: dict[str, Any]) -> Rendered:
        """All three parts or a RenderError: never a half-rendered message."""
        lang, subject_t, text_t, html_t = self._templates(key, language)
        try:
            subject = _ASCII_SPACE.sub(" ", subject_t.render(context)).strip(" ")
            text = text_t.render(context).strip() + "\n"
            html = html_t.render(context)
        except TemplateError as exc:  # UndefinedError, SecurityError, TemplateRuntimeError, ...
            raise RenderError(f"template {lang}/{key}: {type(exc).__name__}: {exc}") from exc
        except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
            raise RenderError(f"template {lang}/{key}: {type(exc).__name__}: {exc}") from exc
        if not subject:
            raise RenderError(f"template {lang}/{key}: empty subject")
        return Rendered(subject=subject, text=text, html=html, language=lang)
