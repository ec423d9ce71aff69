"""`accounts-grpc serve | migrate | bootstrap | keys rotate | keys list | keys retire`.

Every setting is a flag and an ``ACCOUNTS_*`` variable (config.py); ``--help`` of each
command lists those it uses, with their variable and default. Output meant for scripts
goes to stdout (``--json``: one JSON document); logs go to stderr. A command that cannot
start (a bad setting, a database it cannot reach, a port in use, a key-encryption key
missing or wrong) exits 1 with one line naming the setting (config.StartupError).

``serve --processes 1`` serves in this process; ``--processes N`` (N > 1; the default 0
is one per core) runs N worker processes under a supervisor (supervisor.py), which
starts each of them as ``serve`` again, told by its environment that it is a worker.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from accounts_grpc import logs
from accounts_grpc.config import Settings, read_tls

if TYPE_CHECKING:
    from accounts_grpc.app import App
    from accounts_grpc.store.db import Database

log = logging.getLogger("accounts_grpc")
PRINT_BOOTSTRAP_ENV = "ACCOUNTS_PRINT_BOOTSTRAP"

# The settings each command uses, and so lists in its --help (serve: every one).
#: migrate: the database and the log; no keys (the schema needs none)
MIGRATE_FLAGS = ("database_url", "log_level", "log_json")
#: bootstrap: and the key-encryption key, and the algorithm of the first signing key
#: when there is none yet; it signs nothing, so no token lifetime or key cache
BOOTSTRAP_FLAGS = (*MIGRATE_FLAGS, "key_encryption_key", "key_encryption_key_file",
                   "signing_alg")
#: keys rotate|list: and the key cache and JWKS max-age that the publish lead adds up;
#: no --token-lifetime: the lifetimes that count are the servers', on the keys' rows
KEYS_FLAGS = (*BOOTSTRAP_FLAGS, "key_cache_seconds", "jwks_max_age")
#: flags migrate and bootstrap took before, which they do not use: still accepted (a
#: script may pass one set of flags to every command), but not listed by --help
UNUSED_FLAGS = {
    "migrate": ("key_encryption_key", "key_encryption_key_file", "signing_alg",
                "token_lifetime"),
    "bootstrap": ("token_lifetime",),
}
_UNLISTED = "_accounts_unlisted"


class _HelpFormatter(argparse.HelpFormatter):
    """Leaves out of --help (usage and options) the flags a command accepts but does
    not use (UNUSED_FLAGS)."""

    def add_usage(self, usage: str | None, actions: Iterable[argparse.Action],
                  groups: Iterable[Any], prefix: str | None = None) -> None:
        super().add_usage(usage, _listed(actions), groups, prefix)

    def add_arguments(self, actions: Iterable[argparse.Action]) -> None:
        super().add_arguments(_listed(actions))


def _listed(actions: Iterable[argparse.Action]) -> list[argparse.Action]:
    return [a for a in actions if not getattr(a, _UNLISTED, False)]


def _settings_flags(parser: argparse.ArgumentParser, command: str,
                    names: Sequence[str]) -> None:
    Settings.add_arguments(parser, names)
    for action in Settings.add_arguments(parser, UNUSED_FLAGS.get(command, ())):
        setattr(action, _UNLISTED, True)


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
    mig = sub.add_parser("migrate", help="bring the database schema to the current version",
                         formatter_class=_HelpFormatter)
    _settings_flags(mig, "migrate", MIGRATE_FLAGS)
    boot = sub.add_parser("bootstrap", help="create the platform account and an admin machine user",
                          formatter_class=_HelpFormatter)
    _settings_flags(boot, "bootstrap", BOOTSTRAP_FLAGS)
    boot.add_argument(
        "--json", action="store_true", help="print the credentials as one JSON object"
    )
    keys = sub.add_parser("keys", help="signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for name, help_ in (
        ("rotate", "publish a new signing key: every server lists it in its JWKS within its "
         "key cache, and signs with it from its activation time (printed): a key cache plus "
         "a JWKS max-age plus 10 s from now; the current key then retires and stays in the "
         "JWKS until the longest token lifetime any server issues with it has passed (the "
         "servers record theirs)"),
        ("list", "list the signing keys in the JWKS: phase (pending, active, retired) "
         "and times"),
    ):
        k = ksub.add_parser(name, help=help_, description=help_)
        Settings.add_arguments(k, KEYS_FLAGS)
        k.add_argument("--json", action="store_true", help="print JSON")
    retire_help = ("take a signing key out of service now (a leaked key): it leaves the "
                   "JWKS, servers refuse its tokens once they re-read the keys, and "
                   "verifiers following WatchEvents are told at once; the one key that "
                   "signs cannot be retired (rotate first)")
    k = ksub.add_parser("retire", help=retire_help, description=retire_help)
    Settings.add_arguments(k, KEYS_FLAGS)
    k.add_argument("kid", help="the key id (`keys list`)")
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
        return _keys(settings, args.keys_command, as_json=args.json,
                     kid=getattr(args, "kid", ""))
    # serve
    from accounts_grpc import supervisor

    worker = supervisor.worker_identity()
    if worker is not None:  # one of the processes of a supervisor
        supervisor.serve_worker(settings, *worker)
        return 0
    print_bootstrap = args.print_bootstrap
    if print_bootstrap is None:
        raw = os.environ.get(PRINT_BOOTSTRAP_ENV, "")
        print_bootstrap = raw.strip().lower() in ("1", "true", "yes", "on")
    read_tls(settings)  # a TLS file that will not do: one line, before anything starts
    first_steps = functools.partial(_print_first_steps, clients=_clients(settings))
    processes = settings.process_count()
    if processes > 1:
        code = supervisor.Supervisor(
            settings, processes, first_steps=first_steps if print_bootstrap else None
        ).run()
        # the workers are gone and everything is cleaned up: skip the interpreter's
        # teardown, which takes a good part of a second (supervisor.serve_worker)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    app = app_mod.App(settings)
    if print_bootstrap:
        first_steps(app.db, app.grpc_port, app.http_port)
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
    from accounts_grpc.app import ensure_signing_key, load_key_encryption_key, open_database
    from accounts_grpc.auth.keys import KeyStore
    from accounts_grpc.services.bootstrap import bootstrap

    db = open_database(settings, auto_migrate=True)
    # bootstrap signs nothing: it records no token lifetime or key cache on the keys
    ensure_signing_key(KeyStore(db, load_key_encryption_key(settings), settings), settings,
                       signer=False)
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


def _keys(settings: Settings, action: str, *, as_json: bool, kid: str = "") -> int:
    from accounts_grpc.app import ensure_signing_key, load_key_encryption_key, open_database
    from accounts_grpc.auth.keys import KeyStore

    # before the database: PostgreSQL needs one named explicitly
    kek = load_key_encryption_key(settings)
    db = open_database(settings, auto_migrate=True)
    try:
        ks = KeyStore(db, kek, settings)
        # exits if this key-encryption key is not the servers'
        ensure_signing_key(ks, settings, signer=False)
        if action == "retire":
            try:
                ks.retire(kid)
            except (LookupError, ValueError) as e:
                print(f"accounts-grpc: {e.args[0]}", file=sys.stderr)
                return 2
        k = ks.rotate() if action == "rotate" else None
        keys = ks.list_keys()
    finally:
        db.dispose()
    now = time.time_ns() // 1000
    if k is not None:
        if as_json:
            print(json.dumps(_key_json(k, now)))
        else:
            print(f"new signing key {k.kid} ({k.alg}), pending: published now (every "
                  "server's JWKS lists it once it re-reads the keys); every server signs "
                  f"with it from {_rfc3339(k.activate_time)}")
            for old in keys:
                if old.retire_time == k.activate_time:
                    print(f"signing key {old.kid} retires then and stays in the JWKS until "
                          f"{_rfc3339(old.expire_time)} (or later, if a server with longer "
                          "tokens records its lifetime)")
        return 0
    rows = [_key_json(k, now) for k in keys]
    if as_json:
        print(json.dumps(rows))
    else:
        for r in rows:
            times = [f"created {r['create_time']}", f"activates {r['activate_time']}"]
            if r["retire_time"]:
                times.append(f"retires {r['retire_time']}")
            if r["expire_time"]:
                times.append(f"in the JWKS until {r['expire_time']}")
            print(f"{r['kid']}  {r['alg']}  {r['phase']:<7}  {'  '.join(times)}")
    return 0


def _rfc3339(us: int | None) -> str | None:
    if us is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us // 1_000_000))


def _key_json(k: Any, now: int) -> dict[str, Any]:
    phase = k.phase(now)
    return {
        "kid": k.kid,
        "alg": k.alg,
        "phase": phase,  # pending (published, not signing yet), active, retired
        "current": phase == "active",  # signs new tokens
        "create_time": _rfc3339(k.create_time),
        "activate_time": _rfc3339(k.activate_time),
        "retire_time": _rfc3339(k.retire_time),
        "expire_time": _rfc3339(k.expire_time),
        "max_token_lifetime": k.max_token_lifetime,
    }


class _Clients(NamedTuple):
    """How the first steps' grpcurl and curl reach this server."""

    grpcurl: str = "-plaintext"
    curl: str = ""  # flags, each followed by a space; set: https
    files: str = ""  # what the files they name are


def _clients(settings: Settings) -> _Clients:
    if not settings.tls_cert_file:
        return _Clients()
    grpcurl, curl = "-cacert CA.pem", "--cacert CA.pem "
    files = "CA.pem: the CA that signed --tls-cert-file"
    if settings.tls_client_ca_file:
        grpcurl += " -cert CLIENT.pem -key CLIENT-KEY.pem"
        curl += "--cert CLIENT.pem --key CLIENT-KEY.pem "
        files += "; CLIENT*.pem: a client certificate and key from --tls-client-ca-file's CA"
    return _Clients(grpcurl, curl, f"({files})\n")


def _print_first_steps(db: Database, port: int, http_port: int | None, *,
                       clients: _Clients = _Clients()) -> None:
    """On a database without users: bootstrap an admin and say how to use it (stderr)."""
    from accounts_grpc.services.bootstrap import bootstrap, has_users

    if has_users(db):
        print("accounts-grpc: the database has users already; `accounts-grpc bootstrap` "
              "makes another admin machine user", file=sys.stderr, flush=True)
        return
    r = bootstrap(db)
    creds = json.dumps({"client_id": r.client_id, "client_secret": r.client_secret})
    grpcurl = f".venv/bin/grpcurl {clients.grpcurl}"
    rest = ""
    if http_port is not None:
        base = f"https://localhost:{http_port}" if clients.curl else f"localhost:{http_port}"
        rest = f"""
or over REST (RFC 6749 client credentials):
  curl -s {clients.curl}{base}/v1/token -d grant_type=client_credentials \\
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
{rest}{clients.files}""",
        file=sys.stderr,
        flush=True,
    )

if __name__ == "__main__":
    sys.exit(main())
