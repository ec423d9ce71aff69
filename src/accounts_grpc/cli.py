"""`accounts-grpc serve | migrate | bootstrap | keys rotate | keys list`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from accounts_grpc import logs
from accounts_grpc.config import Settings

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
    serve.add_argument("--print-bootstrap", action="store_true",
                       help="on an empty database, bootstrap an admin and print how to get a token")
    mig = sub.add_parser("migrate", help="bring the database schema to the current version")
    Settings.add_arguments(mig, DB_FLAGS)
    boot = sub.add_parser("bootstrap", help="create the platform account and an admin machine user")
    Settings.add_arguments(boot, DB_FLAGS)
    boot.add_argument("--json", action="store_true", help="print the credentials as one JSON object")
    keys = sub.add_parser("keys", help="signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for name, help_ in (("rotate", "make a new signing key; old keys verify until their tokens expire"),
                        ("list", "list the signing keys still in the JWKS")):
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
        before = migrate.current(db.engine)
        migrate.upgrade(db.engine)
        print(f"schema: {before or 'empty'} -> {migrate.current(db.engine)}")
        return 0
    if args.command == "bootstrap":
        return _bootstrap(settings, as_json=args.json)
    if args.command == "keys":
        return _keys(settings, args.keys_command, as_json=args.json)
    # serve
    app = app_mod.App(settings)
    if args.print_bootstrap:
        _print_first_steps(app)
    app.serve_forever()
    return 0


def _bootstrap(settings: Settings, *, as_json: bool) -> int:
    from accounts_grpc.app import open_database
    from accounts_grpc.auth.keys import KeyStore, load_kek
    from accounts_grpc.services.bootstrap import bootstrap

    db = open_database(settings, auto_migrate=True)
    KeyStore(db, load_kek(settings), settings).ensure_key()
    r = bootstrap(db)
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
    ks = KeyStore(db, load_kek(settings), settings)
    if action == "rotate":
        k = ks.rotate()
        print(json.dumps({"kid": k.kid, "alg": k.alg}) if as_json else f"new signing key {k.kid} ({k.alg})")
        return 0
    rows = [
        {"kid": k.kid, "alg": k.alg, "current": k.retire_time is None,
         "retire_time_us": k.retire_time, "expire_time_us": k.expire_time}
        for k in ks.list_keys()
    ]
    if as_json:
        print(json.dumps(rows))
    else:
        for r in rows:
            state = "current" if r["current"] else f"retired, in JWKS until {r['expire_time_us']}"
            print(f"{r['kid']}  {r['alg']}  {state}")
    return 0


def _print_first_steps(app: object) -> None:
    from accounts_grpc.services.bootstrap import bootstrap

    a = app  # type: ignore[assignment]
    r = bootstrap(a.db)  # type: ignore[attr-defined]
    port = a.settings.grpc_port  # type: ignore[attr-defined]
    http = a.settings.http_port  # type: ignore[attr-defined]
    print(
        f"""
accounts-grpc is starting: gRPC on :{port}, REST on :{http}.
A new admin machine user was bootstrapped for you (the secret is shown once):
  client_id:     {r.client_id}
  client_secret: {r.client_secret}
Get a token:
  curl -s localhost:{http}/v1/token -d grant_type=client_credentials \\
       -d client_id={r.client_id} -d client_secret={r.client_secret}
  .venv/bin/grpcurl -plaintext -d '{{"client_id":"{r.client_id}","client_secret":"{r.client_secret}"}}' \\
       localhost:{port} accounts.v1.SessionService/CreateToken
""",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
