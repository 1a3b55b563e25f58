"""``python -m payment_svc api|worker|all|migrate|api-key ...|account ...``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from ar_events.clock import SystemClock
from ar_events.loop import run as run_loop
from ar_web import configure_logging
from ar_web.cli import run_common_command, service_parser, stop_on_signals
from payment_svc.accounts import AccountError
from payment_svc.bootstrap import build
from payment_svc.schema import migrate
from payment_svc.settings import AccountKind, Settings


def serve(settings: Settings, *, run_relay: bool) -> None:
    import uvicorn

    from payment_svc.api import create_app

    app = create_app(settings, run_relay=run_relay)
    uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_config=None, access_log=False)


async def work(settings: Settings) -> None:
    """The outbox relay alone, until SIGTERM or SIGINT."""
    from payment_svc.api import run_relay_loop

    container = build(settings, with_relay=True)
    stop = stop_on_signals()
    try:
        await run_relay_loop(container, stop)
    finally:
        await container.close()


async def account_command(settings: Settings, args: argparse.Namespace) -> int:
    container = build(settings)
    now = SystemClock().now()
    try:
        store = container.secrets
        if args.account_action == "add":
            info = await store.add_account(args.name, AccountKind(args.kind), args.secret, now)
            out = {"account": args.name, "kind": args.kind}
            if info is not None:
                out |= {"secret_id": info.id, "fingerprint": info.fingerprint}
            print(json.dumps(out))
        elif args.account_action == "add-secret":
            try:
                info = await store.add_secret(args.name, args.secret, now)
            except KeyError:
                print(f"error: no account named {args.name!r}", file=sys.stderr)
                return 1
            print(json.dumps({"account": args.name, "secret_id": info.id, "fingerprint": info.fingerprint}))
        elif args.account_action == "remove-secret":
            if not await store.remove_secret(args.name, args.secret_id, now):
                print("error: no such active secret", file=sys.stderr)
                return 1
        else:
            for name, kind, infos in await store.describe():
                secrets = [{"id": i.id, "fingerprint": i.fingerprint, "source": i.source} for i in infos]
                print(json.dumps({"account": name, "kind": kind.value, "secrets": secrets}))
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await container.close()
    return 0


COMMANDS = {
    "api": "serve the HTTP API (no relay)",
    "worker": "publish the outbox (the relay) until SIGTERM",
    "all": "API and relay in one process",
    "migrate": "upgrade the database schema to head",
}


def parser() -> argparse.ArgumentParser:
    p, sub = service_parser("payment_svc", "payment-svc: signed webhooks and payments", COMMANDS)
    acc = sub.add_parser("account", help="processor accounts and signing secrets (never printed)")
    actions = acc.add_subparsers(dest="account_action", required=True)
    add = actions.add_parser("add", help="create an account (idempotent), optionally with a first secret")
    add.add_argument("name")
    add.add_argument("--kind", choices=[k.value for k in AccountKind], required=True)
    add.add_argument("--secret", default=None, help="whsec_... signing secret")
    add_secret = actions.add_parser("add-secret", help="add a secret (start of a rotation)")
    add_secret.add_argument("name")
    add_secret.add_argument("--secret", required=True)
    remove = actions.add_parser("remove-secret", help="remove a secret by id (end of a rotation)")
    remove.add_argument("name")
    remove.add_argument("secret_id")
    actions.add_parser("list", help="accounts with secret ids and fingerprints")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    db = settings.database
    done = run_common_command(args, lambda: migrate(db.url), db.url, pool_size=db.pool_size)
    if done is not None:
        return done
    if args.command == "account":
        return asyncio.run(account_command(settings, args))
    if args.command == "worker":
        with contextlib.suppress(KeyboardInterrupt):
            run_loop(work(settings))
        return 0
    serve(settings, run_relay=args.command == "all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
