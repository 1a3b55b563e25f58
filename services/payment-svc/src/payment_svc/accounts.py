"""Processor accounts and their signing secrets: settings plus database, cached briefly per process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payment_svc.domain.signatures import secret_fingerprint, standard_key
from payment_svc.repository import SecretRow, UnitOfWork
from payment_svc.settings import AccountKind, AccountSettings


class AccountError(ValueError):
    """An admin request that cannot be applied (bad secret format, kind mismatch, settings-owned secret)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    kind: AccountKind
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What the admin API shows about a secret: never the secret."""

    id: str
    fingerprint: str
    source: str
    created_at: datetime | None


def validate_secret(kind: AccountKind, secret: str) -> None:
    """Refuse a secret the account kind cannot use; the message never repeats the secret."""
    if kind is AccountKind.STANDARD:
        try:
            standard_key(secret)
        except ValueError as exc:
            raise AccountError("secret", str(exc)) from None
    elif len(secret) < 16 or len(secret) > 512 or not secret.isascii() or any(c.isspace() for c in secret):
        raise AccountError(
            "secret", "a Stripe signing secret is 16-512 printable ASCII characters (whsec_...)"
        )


def settings_secret_id(account: str, secret: str) -> str:
    return "cfg_" + secret_fingerprint(f"{account}\x00{secret}").removeprefix("sha256:")


class SecretStore:
    """Resolves an account to its kind and active secrets; caches for ``ttl`` seconds (0 = no cache).

    Changes made through this store invalidate the cache at once; other processes see them within ``ttl``.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        configured: Mapping[str, AccountSettings],
        ttl: float = 1.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._configured = dict(configured)
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Account | None]] = {}
        #: loads in progress: requests that miss the cache together share one load (when the entry expired
        #: under load, every request in flight ran the same two queries)
        self._loading: dict[str, asyncio.Future[Account | None]] = {}
        self._generation = 0

    def invalidate(self) -> None:
        self._cache.clear()
        self._loading.clear()  # a load already running may predate the change: later callers start anew
        self._generation += 1

    def _from_settings(self, name: str) -> tuple[AccountKind, list[str]] | None:
        cfg = self._configured.get(name)
        if cfg is None:
            return None
        return cfg.kind, [s.get_secret_value() for s in cfg.secrets]

    async def get(self, name: str) -> Account | None:
        """The account with every active secret, or None when no such account exists."""
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        task = self._loading.get(name)
        if task is None:  # the first miss loads; the others wait for that load (its own task: one waiter
            # cancelled, e.g. a client that went away, does not cancel it for the rest)
            task = self._loading[name] = asyncio.ensure_future(self._load(name))
            task.add_done_callback(partial(self._loaded, name, self._generation, now))
        return await asyncio.shield(task)

    def _loaded(
        self, name: str, generation: int, started: float, task: asyncio.Future[Account | None]
    ) -> None:
        if self._loading.get(name) is task:
            del self._loading[name]
        if task.cancelled() or task.exception() is not None:  # the waiters get the error
            return
        if generation == self._generation:  # not invalidated while loading
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[name] = (started + self._ttl, task.result())

    async def _load(self, name: str) -> Account | None:
        async with UnitOfWork(self._sessionmaker) as uow:
            kind_raw = await uow.accounts.get_kind(name)
            rows = await uow.accounts.active_secrets(name) if kind_raw else []
        cfg = self._from_settings(name)
        if kind_raw is None and cfg is None:
            return None
        kind = AccountKind(kind_raw) if kind_raw else cfg[0]  # type: ignore[index]
        secrets = list(cfg[1]) if cfg and cfg[0] is kind else []
        secrets.extend(r.secret for r in rows)
        return Account(name=name, kind=kind, secrets=tuple(secrets))

    async def describe(self) -> list[tuple[str, AccountKind, list[SecretInfo]]]:
        """Every account with its secrets' ids and fingerprints (for the admin API)."""
        async with UnitOfWork(self._sessionmaker) as uow:
            db_accounts = dict(await uow.accounts.all())
            rows = await uow.accounts.active_secrets()
        names = sorted(set(db_accounts) | set(self._configured))
        out: list[tuple[str, AccountKind, list[SecretInfo]]] = []
        for name in names:
            kind = AccountKind(db_accounts[name]) if name in db_accounts else self._configured[name].kind
            infos: list[SecretInfo] = []
            cfg = self._configured.get(name)
            if cfg is not None and cfg.kind is kind:
                for s in cfg.secrets:
                    value = s.get_secret_value()
                    infos.append(
                        SecretInfo(
                            settings_secret_id(name, value), secret_fingerprint(value), "settings", None
                        )
                    )
            infos.extend(
                SecretInfo(r.id, r.fingerprint, "api", r.created_at) for r in rows if r.account == name
            )
            out.append((name, kind, infos))
        return out

    async def add_account(
        self, name: str, kind: AccountKind, secret: str | None, now: datetime
    ) -> SecretInfo | None:
        """Create an account (idempotent for the same kind) and optionally add a first secret."""
        kind = AccountKind(kind)
        if secret is not None:
            validate_secret(kind, secret)
        configured = self._configured.get(name)
        if configured is not None and configured.kind is not kind:
            raise AccountError("kind", f"account {name!r} is configured as {configured.kind.value}")
        async with UnitOfWork(self._sessionmaker) as uow:
            existing = await uow.accounts.get_kind(name)
            if existing is not None and existing != kind.value:
                raise AccountError("kind", f"account {name!r} already exists as {existing}")
            await uow.accounts.add(name, kind.value, now)
            info = await self._add_secret(uow, name, secret, now) if secret is not None else None
            await uow.commit(now)
        self.invalidate()
        return info

    async def add_secret(self, name: str, secret: str, now: datetime) -> SecretInfo:
        """Add an active secret to an account (the first half of a rotation). KeyError: no such account."""
        account = await self.get(name)
        if account is None:
            raise KeyError(name)
        validate_secret(account.kind, secret)
        async with UnitOfWork(self._sessionmaker) as uow:
            if await uow.accounts.get_kind(name) is None:  # configured only: materialise it
                await uow.accounts.add(name, account.kind.value, now)
            info = await self._add_secret(uow, name, secret, now)
            await uow.commit(now)
        self.invalidate()
        return info

    async def _add_secret(self, uow: UnitOfWork, name: str, secret: str, now: datetime) -> SecretInfo:
        fingerprint = secret_fingerprint(secret)
        for row in await uow.accounts.active_secrets(name):
            if row.fingerprint == fingerprint:
                return SecretInfo(row.id, row.fingerprint, "api", row.created_at)
        row = SecretRow("sec_" + uuid.uuid4().hex, name, secret, fingerprint, now)
        await uow.accounts.add_secret(row)
        return SecretInfo(row.id, fingerprint, "api", now)

    async def remove_secret(self, name: str, secret_id: str, now: datetime) -> bool:
        """Deactivate a secret (the end of a rotation); it is refused from then on."""
        if secret_id.startswith("cfg_"):
            raise AccountError(
                "secret_id", "this secret comes from settings: remove it from the configuration"
            )
        async with UnitOfWork(self._sessionmaker) as uow:
            removed = await uow.accounts.remove_secret(name, secret_id, now)
            await uow.commit(now)
        self.invalidate()
        return removed
