"""API keys with scopes: hashed at rest, verified with a short in-memory cache, enforced per route.

Wiring: the service's bootstrap puts an :class:`ApiKeyStore` on ``app.state.api_keys`` (``create_service_app``
does it when given ``sessionmaker=``); routes depend on :func:`require_scopes` or :func:`authenticated`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from fastapi import Request
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_web.metrics import AUTH_FAILURES
from ar_web.problems import ProblemError
from ar_web.tables import API_KEY

KEY_PREFIX = "ar_"
ALL_SCOPES: tuple[str, ...] = (
    "invoices:write",
    "reports:read",
    "payments:write",
    "payments:admin",
    "collections:write",
    "ops",
)
_MIN_KEY_LENGTH = 24


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the API key's id, name and scopes."""

    key_id: str
    name: str
    scopes: frozenset[str]

    def has(self, *scopes: str) -> bool:
        return all(scope in self.scopes for scope in scopes)


def generate_api_key() -> str:
    """A new high-entropy key: ``ar_`` + 43 url-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 hex of the key (the key has 256 bits of entropy, so no salt or slow hash is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def validate_key_format(key: str) -> None:
    if not key.startswith(KEY_PREFIX) or len(key) < _MIN_KEY_LENGTH or not key.isascii() or " " in key:
        raise ValueError(
            f"an API key must start with {KEY_PREFIX!r} and be at least {_MIN_KEY_LENGTH} characters"
        )


def parse_scopes(scopes: str | Iterable[str]) -> list[str]:
    """``"a,b c"`` or ``["a", "b"]`` -> sorted unique scopes; ``"all"``/``"*"`` means every known scope."""
    items = scopes.replace(",", " ").split() if isinstance(scopes, str) else [s.strip() for s in scopes]
    out: set[str] = set()
    for item in items:
        if item in ("*", "all"):
            out.update(ALL_SCOPES)
        elif item:
            out.add(item)
    return sorted(out)


async def create_api_key(
    session: AsyncSession,
    name: str,
    scopes: str | Iterable[str],
    key: str | None = None,
    *,
    now: datetime | None = None,
) -> str:
    """Store a key (given, or generated) with its scopes; returns the plain key, shown once.

    Re-running with the same explicit key updates its name and scopes and un-revokes it (the dev stack
    provisions the same key on every start). The caller commits.
    """
    plain = key if key is not None else generate_api_key()
    validate_key_format(plain)
    scope_list = parse_scopes(scopes)
    key_hash = hash_api_key(plain)
    when = now or datetime.now(UTC)
    existing = (
        await session.execute(select(API_KEY.c.id).where(API_KEY.c.key_hash == key_hash))
    ).scalar_one_or_none()
    if existing is not None:
        await session.execute(
            update(API_KEY)
            .where(API_KEY.c.id == existing)
            .values(name=name, scopes=" ".join(scope_list), revoked_at=None)
        )
    else:
        await session.execute(
            API_KEY.insert().values(
                id=str(uuid.uuid4()),
                name=name,
                prefix=plain[:10],
                key_hash=key_hash,
                scopes=" ".join(scope_list),
                created_at=when,
                revoked_at=None,
            )
        )
    return plain


async def revoke_api_key(session: AsyncSession, key_or_id: str, *, now: datetime | None = None) -> bool:
    """Revoke by plain key or by id; returns whether a key was found. The caller commits."""
    when = now or datetime.now(UTC)
    cond = (
        API_KEY.c.key_hash == hash_api_key(key_or_id)
        if key_or_id.startswith(KEY_PREFIX)
        else API_KEY.c.id == key_or_id
    )
    result = await session.execute(update(API_KEY).where(cond).values(revoked_at=when))
    return bool(getattr(result, "rowcount", 0))


async def list_api_keys(session: AsyncSession) -> list[dict[str, Any]]:
    """Every key's id, name, prefix, scopes and dates (never the hash)."""
    rows = await session.execute(
        select(
            API_KEY.c.id,
            API_KEY.c.name,
            API_KEY.c.prefix,
            API_KEY.c.scopes,
            API_KEY.c.created_at,
            API_KEY.c.revoked_at,
        ).order_by(API_KEY.c.created_at)
    )
    return [dict(row._mapping) for row in rows]


@runtime_checkable
class KeyVerifier(Protocol):
    """What the auth dependencies need on ``app.state.api_keys``."""

    async def verify(self, key: str) -> Principal | None: ...


class ApiKeyStore:
    """Verifies keys against the ``api_key`` table, caching answers briefly (revocation takes up to ``ttl``)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        ttl_seconds: float = 30.0,
        negative_ttl_seconds: float = 2.0,
        max_entries: int = 10_000,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        self._max_entries = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def clear_cache(self) -> None:
        self._cache.clear()

    async def verify(self, key: str) -> Principal | None:
        """The principal for ``key``, or None when it is unknown or revoked."""
        key_hash = hash_api_key(key)
        now = time.monotonic()
        hit = self._cache.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self._load(key_hash)
        if len(self._cache) >= self._max_entries:
            # Unknown keys must not grow memory without bound; a full reset is cheap and rare.
            self._cache.clear()
        self._cache[key_hash] = (now + (self._ttl if principal else self._negative_ttl), principal)
        return principal

    async def _load(self, key_hash: str) -> Principal | None:
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    select(API_KEY.c.id, API_KEY.c.name, API_KEY.c.key_hash, API_KEY.c.scopes).where(
                        API_KEY.c.key_hash == key_hash, API_KEY.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, key_hash):
            return None
        return Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes.split()))


#: The two ways of sending a key, as OpenAPI security schemes. ``create_service_app`` adds them to the document
#: and lists them on every operation whose dependencies include an authenticating one (``AUTH_MARK``).
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer ar_...`"},
    "APIKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "`X-API-Key: ar_...`",
    },
}
AUTH_MARK = "__ar_authenticates__"

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'}


def _store(request: Request) -> KeyVerifier:
    store = getattr(request.app.state, "api_keys", None)
    if not isinstance(store, KeyVerifier):
        raise RuntimeError("no ApiKeyStore on app.state.api_keys: pass sessionmaker= to create_service_app")
    return store


def _presented_key(request: Request) -> str | None:
    """``Authorization: Bearer <key>`` (scheme case-insensitive), else ``X-API-Key: <key>``."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return request.headers.get("x-api-key") or None


async def _principal(request: Request) -> Principal:
    """The key's principal, or 401. One flat dependency (reading the headers itself): FastAPI solves each
    nested dependency per request, and the security-scheme sub-dependencies cost more than the check."""
    key = _presented_key(request)
    if not key:
        AUTH_FAILURES.labels("missing").inc()
        raise ProblemError(
            401,
            "Authentication required",
            "Send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            headers={"WWW-Authenticate": 'Bearer realm="api"'},
        )
    principal = await _store(request).verify(key)
    if principal is None:
        AUTH_FAILURES.labels("unknown").inc()
        raise ProblemError(401, "Invalid API key", "The API key is unknown or revoked", headers=_CHALLENGE)
    request.state.principal = principal
    return principal


setattr(_principal, AUTH_MARK, True)


def authenticated() -> Callable[..., Awaitable[Principal]]:
    """Dependency: any valid key. ``principal: Principal = Depends(authenticated())``."""
    return _principal


def require_scopes(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: a valid key holding every one of ``scopes`` (401 without a valid key, 403 without a scope)."""
    needed = tuple(scopes)

    async def dependency(request: Request) -> Principal:
        principal = await _principal(request)
        missing = [scope for scope in needed if scope not in principal.scopes]
        if missing:
            AUTH_FAILURES.labels("scope").inc()
            raise ProblemError(
                403,
                "Insufficient scope",
                f"This operation needs the scope(s): {', '.join(missing)}",
                extra={"required_scopes": list(needed)},
                headers={
                    "WWW-Authenticate": f'Bearer realm="api", error="insufficient_scope", scope="{" ".join(needed)}"'
                },
            )
        return principal

    setattr(dependency, AUTH_MARK, True)
    return dependency
