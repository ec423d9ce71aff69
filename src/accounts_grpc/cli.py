"""`accounts-grpc serve | migrate | bootstrap | keys rotate | keys list`.

Every setting is a flag and an ``ACCOUNTS_*`` variable (config.py); ``--help`` of each
command lists them with their variable and default. Output meant for scripts goes to
stdout (``--json``: one JSON document); logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from accounts_grpc import logs
from accounts_grpc.config import Settings

if TYPE_CHECKING:
    from accounts_grpc.app import App

log = logging.getLogger("accounts_grpc")
PRINT_BOOTSTRAP_ENV = "ACCOUNTS_PRINT_BOOTSTRAP"

DB_FLAGS = ("database_url", "key_encryption_key", "key_encryption_key_file", "log_level",
            "log_json", "signing_alg", "token_lifetime")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="accounts-grpc",
        description="Multi-tenant accounts and identity service (gRPC + REST). "
        "Every flag also reads an ACCOUNTS_* environment variable.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the gRPC server and the REST shim")
    Settings.add_arguments(serve)
    serve.add_argument(
        "--print-bootstrap", action=argparse.BooleanOptionalAction, default=None,
        help="on a database with no users yet, bootstrap an admin machine user and print "
        f"its credentials and how to get a token [env {PRINT_BOOTSTRAP_ENV}; default False]",
    )
    mig = sub.add_parser("migrate", help="bring the database schema to the current version")
    Settings.add_arguments(mig, DB_FLAGS)
    boot = sub.add_parser("bootstrap", help="create the platform account and an admin machine user")
    Settings.add_arguments(boot, DB_FLAGS)
    boot.add_argument(
        "--json", action="store_true", help="print the credentials as one JSON object"
    )
    keys = sub.add_parser("keys", help="signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for name, help_ in (
        ("rotate", "make a new signing key; old keys verify until their tokens expire"),
        ("list", "list the signing keys still in the JWKS"),
    ):
        k = ksub.add_parser(name, help=help_)
        Settings.add_arguments(k, DB_FLAGS)
        k.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.load(args)
    logs.setup(settings.log_level, settings.log_json)
    from accounts_grpc import app as app_mod

    if args.command == "migrate":
        from accounts_grpc.store import migrate
        from accounts_grpc.store.db import Database

        db = Database(settings.database_url)
        try:
            before = migrate.current(db.engine)
            migrate.upgrade(db.engine)
            print(f"schema: {before or 'empty'} -> {migrate.current(db.engine)}")
        finally:
            db.dispose()
        return 0
    if args.command == "bootstrap":
        return _bootstrap(settings, as_json=args.json)
    if args.command == "keys":
        return _keys(settings, args.keys_command, as_json=args.json)
    # serve
    app = app_mod.App(settings)
    print_bootstrap = args.print_bootstrap
    if print_bootstrap is None:
        raw = os.environ.get(PRINT_BOOTSTRAP_ENV, "")
        print_bootstrap = raw.strip().lower() in ("1", "true", "yes", "on")
    if print_bootstrap:
        _print_first_steps(app)
    app.serve_forever()
    _exit_if_calls_linger(app)
    return 0


def _exit_if_calls_linger(app: App) -> None:
    """After the drain, calls cut off at the grace may still hold worker threads (a
    handler blocked on the database, say); the interpreter would wait for them at exit.
    Do not: the drain is over, so leave now."""
    busy = app.grpc.busy_workers()
    if busy:
        log.warning("exiting with %d worker thread(s) still busy after the grace", busy)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


def _bootstrap(settings: Settings, *, as_json: bool) -> int:
    from accounts_grpc.app import open_database
    from accounts_grpc.auth.keys import KeyStore, load_kek
    from accounts_grpc.services.bootstrap import bootstrap

    db = open_database(settings, auto_migrate=True)
    KeyStore(db, load_kek(settings), settings).ensure_key()
    r = bootstrap(db)
    db.dispose()
    out = {"account_id": r.account_id, "user_id": r.user_id, "client_id": r.client_id,
           "client_secret": r.client_secret}
    if as_json:
        print(json.dumps(out))
    else:
        print(f"platform account: {r.account_id}{' (created)' if r.account_created else ''}")
        print(f"admin machine user: {r.user_id}")
        print(f"client_id:     {r.client_id}")
        print(f"client_secret: {r.client_secret}   (shown once; store it now)")
    return 0


def _keys(settings: Settings, action: str, *, as_json: bool) -> int:
    from accounts_grpc.app import open_database
    from accounts_grpc.auth.keys import KeyStore, load_kek

    db = open_database(settings, auto_migrate=True)
    try:
        ks = KeyStore(db, load_kek(settings), settings)
        if action == "rotate":
            k = ks.rotate()
            if as_json:
                print(json.dumps(_key_json(k)))
            else:
                print(f"new signing key {k.kid} ({k.alg}); earlier keys verify until "
                      "their last token has expired")
            return 0
        ks.ensure_key()
        rows = [_key_json(k) for k in ks.list_keys()]
    finally:
        db.dispose()
    if as_json:
        print(json.dumps(rows))
    else:
        for r in rows:
            state = ("current (signs new tokens)" if r["current"]
                     else f"retired {r['retire_time']}, in the JWKS until {r['expire_time']}")
            print(f"{r['kid']}  {r['alg']}  created {r['create_time']}  {state}")
    return 0


def _rfc3339(us: int | None) -> str | None:
    if us is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us // 1_000_000))


def _key_json(k: Any) -> dict[str, Any]:
    return {
        "kid": k.kid,
        "alg": k.alg,
        "current": k.retire_time is None,
        "create_time": _rfc3339(k.create_time),
        "retire_time": _rfc3339(k.retire_time),
        "expire_time": _rfc3339(k.expire_time),
    }


def _print_first_steps(app: App) -> None:
    """On a database without users: bootstrap an admin and say how to use it (stderr)."""
    from accounts_grpc.services.bootstrap import bootstrap, has_users

    if has_users(app.db):
        print("accounts-grpc: the database has users already; `accounts-grpc bootstrap` "
              "makes another admin machine user", file=sys.stderr, flush=True)
        return
    r = bootstrap(app.db)
    port = app.grpc_port
    creds = json.dumps({"client_id": r.client_id, "client_secret": r.client_secret})
    grpcurl = ".venv/bin/grpcurl -plaintext"
    rest = ""
    if app.http_port is not None:
        rest = f"""
or over REST (RFC 6749 client credentials):
  curl -s localhost:{app.http_port}/v1/token -d grant_type=client_credentials \\
       -d client_id={r.client_id} -d client_secret={r.client_secret}
"""
    print(
        f"""
accounts-grpc: a new admin machine user was bootstrapped (the secret is shown only once):
  client_id:     {r.client_id}
  client_secret: {r.client_secret}
Get a token and call the API with it:
  TOKEN=$({grpcurl} -d '{creds}' localhost:{port} accounts.v1.SessionService/CreateToken \\
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  {grpcurl} -H "authorization: Bearer $TOKEN" localhost:{port} accounts.v1.UserService/GetMe
{rest}""",
        file=sys.stderr,
        flush=True,
    )

if __name__ == "__main__":
    sys.exit(main())
