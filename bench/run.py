"""`make bench`: the real server under load (128 calls in flight), beside a bare grpcio echo.

What it measures (the issue "Serving under real load"; every ratio is within one run):

1. Per process: one server process pinned to CPU 0 (``sched_setaffinity``), the load
   generator on the other core(s), ``--concurrency`` (128) calls in flight, ``--warmup``
   (2 s) then ``--seconds`` (10 s) measured per row. Rows: the bare echo (the ceiling),
   GetMe with a JWT, GetAccount, ListAccounts page 1 of 100,000 (its ``total_size``
   checked against the accounts in the database), ListAccounts filtered, CreateToken,
   and a PyJWT sign loop for the server's algorithm and key type, in a subprocess pinned
   to the same core while no server runs (CreateToken's baseline). ``--rows all`` adds
   the other hot paths (session GetMe, page 1,000, groups, device permissions, REST).
2. Signing algorithms: PyJWT sign/s and verify/s for RS256 (RSA 2048), ES256 (P-256)
   and EdDSA (Ed25519) on the pinned core, beside CreateToken with the server signing
   with each (its own SQLite copy of the seeded database, bootstrapped and served with
   ``--signing-alg``; an algorithm ``config.py`` refuses is "n/a").
3. Every core: GetMe and GetAccount with ``serve --processes 2`` against ``--processes
   1``, both unpinned, the load generator sharing the machine (aim: >= 1.6x). A tree
   whose ``serve --help`` has no ``--processes`` prints the 2-process rows as n/a.
4. PostgreSQL: the rows of 1 again, on a database ``bench_<random>`` created on
   ``--pg-admin-url`` (migrated with ``accounts-grpc migrate``, seeded with COPY, dropped
   at the end); "n/a (PostgreSQL not reachable)" when it is not.
5. Tracing: GetMe over gRPC and over REST, SQLite, pinned, with a server that traces
   nothing (no OTLP endpoint: the default) and then one that samples every call and
   exports its spans over OTLP/HTTP (``--otlp-endpoint``) to a stand-in collector in this
   process (``bench/otlp_sink.py``), side by side: "cost us/call" is the server CPU time
   tracing adds to a call. The load sends no ``traceparent``, so each call is a new
   trace, sampled (``parentbased_always_on``): the most tracing can cost.
6. ``--repeat N`` (3) runs all of it N times: each row shows its best pass, and every
   ratio the min/median/max of its N per-pass values ("spread").

How (everything on 127.0.0.1, in a fresh temp directory): the SQLite database is seeded
straight after the Alembic migrations (``bench/seed.py`` says why), ``accounts-grpc
bootstrap --json`` makes the platform admin, the rest is set up through the public API
(``bench/fixtures.py``). Each server is started for its section and stopped after it
(``--log-level WARNING``, ``--processes 1`` unless the section says otherwise, when the
tree has the flag: its default is one process per core). For each row: one probe call
(a failing or UNIMPLEMENTED row prints "n/a (...)"), then ``--procs`` load processes
(``bench/load.py``: asyncio gRPC clients by default) keep the calls in flight for
``--warmup`` + ``--seconds``; only calls completing in the measured window count.

Columns: "srv us/call" is the server's CPU time per answered call (the load generator
cannot inflate it); "cs/call" its context switches per call (threads handing the GIL to
each other); "in flight" the mean concurrency the clients saw; "load CPU" the load
processes' CPU (near 100% x their cores: the load, not the server, was the limit); "db
CPU" the PostgreSQL backends'; "other CPU" the rest of the machine in the window (from
/proc/stat), and a row where it reached 15% of a core is marked NOISY.

Writes ``bench/results/latest.md`` and ``latest.json`` (``--out`` changes the stem,
``--no-write`` skips). Servers are killed on any exit (finally, Ctrl-C, SIGTERM, a
``--timeout`` watchdog, and PR_SET_PDEATHSIG if this process is killed outright), and the
PostgreSQL database is dropped; exit status 0, 1 if a server died during the run, 2 if
the set-up failed, 130 if interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench import fixtures, procs, report, rows, seed
from bench.load import Job, LoadPool, Result
from bench.otlp_sink import OtlpSink
from bench.report import AlgResult, CoresResult, RowResult, TracingResult

RESULTS = Path(__file__).parent / "results"
MIN_CALLS = 30  # a row with fewer calls in its window is measured again, longer
ALGS = ("RS256", "ES256", "EdDSA")
CORE_ROWS = ("getme_jwt", "get_account")
SECTIONS = ("pinned", "algs", "cores", "postgres", "tracing", "watch")
TRACING_ROWS = ("getme_jwt", "rest_me")
WATCH_STREAMS, WATCH_WRITERS = 100, 4  #: the fan-out section's open streams and writers
PG_ADMIN_URL = os.environ.get("ACCOUNTS_BENCH_PG_ADMIN_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=None,
                   help="measured seconds per row [10; 1.5 with --quick]")
    p.add_argument("--warmup", type=float, default=None,
                   help="warm-up seconds per row [2; 0.5 with --quick]")
    p.add_argument("--concurrency", type=int, default=128,
                   help="calls in flight in all, split over --procs [128]")
    p.add_argument("--procs", type=int, default=2, help="load processes [2]")
    p.add_argument("--channels", type=int, default=8,
                   help="gRPC channels (TCP connections) per load process [8]")
    p.add_argument("--client", choices=("aio", "threads"), default="aio",
                   help="load clients: asyncio tasks (grpc.aio) or blocking threads; REST "
                        "rows always use threads [aio]")
    p.add_argument("--max-seconds", type=float, default=15.0,
                   help=f"a slow row with < {MIN_CALLS} calls is re-measured over a longer "
                        "window, at most this long [15]")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the per-process servers to CPU 0 and the load to the "
                        "other CPUs (they are pinned by default)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 0.5 s warm-up + 1.5 s per row, one pass, short PyJWT "
                        "loops")
    p.add_argument("--rows", default="",
                   help="comma-separated row keys of the per-process table, or 'all' "
                        "(default: the issue's rows): " + ",".join(r.key for r in rows.ROWS))
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"which parts to run [{','.join(SECTIONS)}]")
    p.add_argument("--repeat", type=int, default=None,
                   help="passes over everything; each row keeps its best, each ratio its "
                        "min/median/max [3; 1 with --quick]")
    p.add_argument("--accounts", type=int, default=100_000, help="accounts to seed [100000]")
    p.add_argument("--grpc-workers", type=int, default=0,
                   help="--grpc-workers for both servers (0: the server's default)")
    p.add_argument("--jwt-seconds", type=float, default=None,
                   help="seconds per PyJWT sign or verify loop [2; 0.5 with --quick]")
    p.add_argument("--pg-admin-url", default=PG_ADMIN_URL,
                   help="PostgreSQL to create the bench database on (env "
                        "ACCOUNTS_BENCH_PG_ADMIN_URL) [%(default)s]")
    p.add_argument("--sweep-workers", default="",
                   help="comma-separated pool sizes, e.g. 4,8,16,64: after the table, restart "
                        "the servers with each and measure GetMe (JWT) and echo")
    p.add_argument("--sweep-max-rpcs", type=int, default=0,
                   help="--grpc-max-concurrent-rpcs asked for during the sweep (0: the "
                        "server's default) [0]")
    p.add_argument("--sweep-only", action="store_true", help="skip the tables, run the sweep")
    p.add_argument("--out", default=str(RESULTS / "latest"),
                   help="write <out>.md and <out>.json [bench/results/latest]")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--timeout", type=float, default=2400.0,
                   help="hard limit for the whole run, seconds; then everything is killed "
                        "[2400]")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (DBs, logs)")
    return p


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _settings_default(name: str) -> Any:
    from accounts_grpc.config import Settings

    return getattr(Settings(), name)


def _alg_refused(alg: str) -> str | None:
    """Why this tree's configuration refuses ``--signing-alg alg`` (None: it accepts it)."""
    from accounts_grpc.config import Settings

    try:
        Settings(signing_alg=alg)
    except ValueError as e:
        text = str(e)
        if " must be " in text:
            return "the server accepts " + text.split(" must be ", 1)[1].split(", not")[0]
        return _short_reason(text)
    return None


@dataclass
class DbEnv:
    """One database the servers run on, and what its set-up made."""
    name: str  # "sqlite" | "postgres" | "sqlite-<alg>"
    url: str
    kek: Path
    ctx: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    unavailable: str = ""  # why no row can run on it
    serve_args: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="accounts-bench-"))
        self.envs: dict[str, DbEnv] = {}
        self.servers: list[procs.Proc] = []
        self.server: procs.Proc | None = None
        self.echo: procs.Proc | None = None
        self.echo_address = ""
        self.pool: LoadPool | None = None
        self.workers = args.grpc_workers or int(_settings_default("grpc_workers"))
        self.clients_per_proc = max(1, -(-args.concurrency // args.procs))
        self.died: set[str] = set()
        self.restarts = 0
        self.pg_admin = args.pg_admin_url
        self.pg_dbname = ""
        cpus = sorted(os.sched_getaffinity(0))
        self.pinned = not args.no_pin and len(cpus) >= 2
        self.server_cpus: set[int] | None = {cpus[0]} if self.pinned else None
        self.load_cpus: set[int] | None = set(cpus[1:]) if self.pinned else None
        self.has_processes = False
        self.server_alg = ""  # the algorithm the main server signs with
        self.server_key = ""  # and its key type ("RSA 2048")
        self.sink: OtlpSink | None = None  # the tracing rows' collector
        self._cfg: dict[str, Any] = {}

    @property
    def concurrency(self) -> int:
        return self.clients_per_proc * self.args.procs

    # -- processes -----------------------------------------------------------------------
    def start_echo(self) -> None:
        echo, addr = procs.echo_server(self.tmp, self.workers, cpus=self.server_cpus)
        self.servers.append(echo)
        self.echo, self.echo_address = echo, addr
        for env in self.envs.values():
            env.ctx["echo_address"] = addr

    def start_accounts(self, db: str, *, pinned: bool = True, processes: int = 1,
                       workers: int | None = None, max_rpcs: int | None = None,
                       tag: str = "", extra: list[str] | None = None) -> None:
        """Start the accounts server on ``db`` (stopping the one running). ``processes``
        becomes ``--processes`` when the tree has the flag (1 otherwise); ``extra``: more
        ``serve`` flags."""
        self.stop_accounts()
        self._cfg = dict(db=db, pinned=pinned, processes=processes, workers=workers,
                         max_rpcs=max_rpcs, tag=tag, extra=extra)
        env = self.envs[db]
        srv = procs.accounts_server(
            self.tmp, env.url, env.kek, workers or self.workers, max_rpcs=max_rpcs,
            tag=f"-{db}{tag}", cpus=self.server_cpus if pinned else None,
            processes=processes if self.has_processes else None,
            extra=[*env.serve_args, *(extra or [])])
        self.servers.append(srv.proc)
        self.server = srv.proc
        env.ctx.update(grpc_address=srv.grpc_address, http_port=srv.http_port)

    def try_start(self, db: str, **kw: Any) -> str | None:
        """``start_accounts``; None if it serves, else why not (the rows become n/a)."""
        try:
            self.start_accounts(db, **kw)
            return None
        except (RuntimeError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log(f"  could not start the server on {db}: {e}")
            self.died.add(f"accounts server on {db} did not start")
            return _short_reason(first)

    def stop_accounts(self) -> None:
        if self.server is not None:
            self.server.stop()
            if self.server in self.servers:
                self.servers.remove(self.server)
            self.server = None

    def _reachable(self, ctx: dict[str, Any]) -> bool:
        """Does the accounts server still accept connections on both its ports?"""
        host, port = str(ctx["grpc_address"]).rsplit(":", 1)
        for p in (int(port), int(ctx["http_port"])):
            try:
                with socket.create_connection((host, p), timeout=1):
                    pass
            except OSError:
                return False
        return True

    def _revive(self, target: procs.Proc) -> bool:
        """A server that exited under us (a crash, or a signal from outside the bench) is
        reported, and the accounts server restarted on the same database, at most twice:
        tokens, ids and page tokens stay valid, so the remaining rows can still run."""
        code = target.popen.returncode if target.popen else None
        why = "stopped by a signal (a clean drain)" if code == 0 else f"exit status {code}"
        log(f"  {target.name} exited ({why}); its log ends:\n{target.log_tail(15)}")
        self.died.add(f"{target.name} ({why})")
        if target is not self.server or self.restarts >= 2:
            return False
        self.restarts += 1
        cfg = dict(self._cfg)
        self.start_accounts(cfg.pop("db"), **cfg)
        log(f"  restarted the accounts server ({self.restarts} of at most 2 restarts)")
        return True

    def stop_servers(self) -> None:
        while self.servers:
            self.servers.pop().stop()
        self.server = self.echo = None

    def kill_all(self) -> None:
        for p in list(self.servers):
            p.kill_now()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        self.stop_servers()
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        if self.pg_dbname:
            try:
                _pg_drop(self.pg_admin, self.pg_dbname)
                log(f"dropped PostgreSQL database {self.pg_dbname}")
            except Exception as e:  # reported, the run's result stands
                log(f"bench: could not drop PostgreSQL database {self.pg_dbname}: {e}")
            self.pg_dbname = ""
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- set-up --------------------------------------------------------------------------
    def prepare(self, sections: set[str], wanted: list[str]) -> None:
        self.has_processes = "--processes" in procs.serve_flags()
        if not self.has_processes:
            log("this tree's `serve --help` has no --processes: 2-process rows are n/a")
        n = self.args.accounts
        sqlite = DbEnv("sqlite", f"sqlite:///{self.tmp / 'accounts.db'}",
                       self.tmp / "accounts.kek")
        self.envs["sqlite"] = sqlite
        log(f"seeding {n:,} accounts into {sqlite.url} ...")
        log(f"  seeded in {seed.seed_accounts(sqlite.url, n):.1f}s")
        base = self.tmp / "seeded.db"  # seeded, no user or key yet: the per-algorithm copies
        if "algs" in sections:
            _copy_sqlite(self.tmp / "accounts.db", base)
        self._bootstrap(sqlite)
        self.start_echo()
        self._setup_env(sqlite, wanted)
        self.server_alg, self.server_key = _signing_key(sqlite)
        log(f"  the server signs with {self.server_alg} ({self.server_key})")
        if "algs" in sections:
            for alg in ALGS:
                if alg == self.server_alg or _alg_refused(alg):
                    continue
                env = DbEnv(f"sqlite-{alg}", f"sqlite:///{self.tmp / f'accounts-{alg}.db'}",
                            sqlite.kek, serve_args=["--signing-alg", alg])
                _copy_sqlite(base, self.tmp / f"accounts-{alg}.db")
                env.ctx["echo_address"] = self.echo_address
                self.envs[env.name] = env
                try:
                    self._bootstrap(env, ["--signing-alg", alg])
                except RuntimeError as e:
                    env.unavailable = _short_reason(str(e).splitlines()[-1] if str(e) else "")
        if "postgres" in sections:
            self._prepare_pg(wanted)

    def _bootstrap(self, env: DbEnv, extra: list[str] | None = None) -> None:
        out = procs.cli(["bootstrap", "--json", "--database-url", env.url,
                         "--key-encryption-key-file", str(env.kek), "--log-level", "WARNING",
                         *(extra or [])])
        boot = json.loads(out.strip().splitlines()[-1])
        env.ctx.update(admin_client_id=boot["client_id"],
                       admin_client_secret=boot["client_secret"],
                       platform_account_id=boot["account_id"])

    def _setup_env(self, env: DbEnv, wanted: list[str]) -> None:
        """Through the public API on a server of its own; then the account id of the
        GetAccount row, and the counts the ListAccounts rows' total_size must equal."""
        self.start_accounts(env.name)
        log(f"set-up through the public API ({env.name}):")
        page = None
        if "list_p1000" in wanted:
            page = min(1000, max(1, -(-(self.args.accounts + 2) // rows.PAGE_SIZE)))
        env.missing = fixtures.run_setup(env.ctx, page=page, log=log)
        env.ctx["account_id"] = _middle_account_id(env.url)
        env.ctx["open_accounts"] = _open_accounts(env.url)
        env.ctx["filter_expected"] = seed.expected_matches(self.args.accounts)
        self.stop_accounts()

    def _prepare_pg(self, wanted: list[str]) -> None:
        why = _pg_reachable(self.pg_admin)
        name = f"bench_{secrets.token_hex(4)}"
        url = _pg_url(self.pg_admin, name)
        env = DbEnv("postgres", url, self.tmp / "pg.kek")
        env.ctx["echo_address"] = self.echo_address
        self.envs["postgres"] = env
        if why:
            env.unavailable = f"PostgreSQL not reachable: {why}" if why != "-" else \
                "PostgreSQL not reachable"
            log(f"postgres: {env.unavailable}")
            return
        try:
            _pg_create(self.pg_admin, name)
            self.pg_dbname = name
            log(f"PostgreSQL database {name}: accounts-grpc migrate ...")
            procs.cli(["migrate", "--database-url", url, "--key-encryption-key-file",
                       str(env.kek), "--log-level", "WARNING"])
            log(f"  seeding {self.args.accounts:,} accounts (COPY) ...")
            log(f"  seeded in {seed.seed_accounts_pg(url, self.args.accounts):.1f}s")
            self._bootstrap(env)
            self._setup_env(env, wanted)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            self.stop_accounts()
            env.unavailable = "PostgreSQL set-up failed: " + _short_reason(str(e))
            log(f"postgres: {env.unavailable}")
        except Exception as e:  # psycopg errors: the PostgreSQL rows are n/a, not the run
            self.stop_accounts()
            env.unavailable = "PostgreSQL set-up failed: " + _short_reason(
                f"{type(e).__name__}: {e}")
            log(f"postgres: {env.unavailable}")

    # -- measuring -----------------------------------------------------------------------
    def probe(self, key: str, ctx: dict[str, Any]) -> str | None:
        """One call from this process; None if it worked, else why the row is n/a."""
        row = rows.BY_KEY[key]
        address = str(ctx["echo_address" if row.kind == "echo" else "grpc_address"])
        ch = grpc.insecure_channel(address) if row.kind != "http" else None
        try:
            rows.build_call(key, ctx, ch, 0)()
            return None
        except Exception as e:
            code = rows.error_code(e)
            return code if code == "UNIMPLEMENTED" else f"{code}: {rows.error_detail(e)}"
        finally:
            if ch is not None:
                ch.close()

    def measure(self, key: str, db: str, seconds: float, warmup: float, *,
                pinned: bool = True, extended: bool = False) -> RowResult:
        row = rows.BY_KEY[key]
        env = self.envs[db]
        out_db = "sqlite" if db.startswith("sqlite") else db
        if env.unavailable:
            return report.not_available(key, env.unavailable, out_db)
        ctx = env.ctx
        lacking = [k for k in row.needs if k not in ctx]
        if lacking:
            return report.not_available(
                key, _short_reason(env.missing.get(lacking[0], f"no {lacking[0]}")), out_db)
        target = self.echo if row.kind == "echo" else self.server
        assert target is not None
        if not target.alive():
            if not self._revive(target):
                return report.not_available(key, f"{target.name} exited", out_db)
            target = self.server
            assert target is not None
        why = self.probe(key, ctx)
        if why is not None and target is self.server and not self._reachable(ctx):
            # draining or hung after a signal: stop it for good, then start a fresh one
            target.stop(grace=15)
            if not self._revive(target):
                return report.not_available(key, f"{target.name} stopped answering", out_db)
            target = self.server
            assert target is not None
            why = self.probe(key, ctx)
        if why is not None:
            return report.not_available(key, _short_reason(why), out_db)
        total: tuple[int, int] | None = None
        if key in ("list_p1", "list_filtered"):
            try:
                total = (fixtures.total_size(ctx, key == "list_filtered"),
                         int(ctx["filter_expected" if key == "list_filtered"
                                 else "open_accounts"]))
            except (grpc.RpcError, KeyError):
                total = None
        assert self.pool is not None
        job = Job(key, ctx, self.clients_per_proc, self.args.channels, warmup=warmup,
                  seconds=seconds, client=self.args.client,
                  cpus=self.load_cpus if pinned else None)
        server_pid = target.pid
        box: dict[str, Any] = {}
        pg_name = self.pg_dbname if out_db == "postgres" else ""

        def sample_server_cpu(start_at: float) -> None:
            """CPU of the server (its process tree), the machine and the bench database's
            backends over the window, scaled to it: on a busy machine this thread may wake
            late, so each delta is divided by the time between its own two samples."""
            def sample() -> tuple[float, float, float, int, dict[int, float]]:
                return (time.monotonic(), procs.machine_busy_seconds(),
                        procs.tree_cpu_seconds(server_pid),
                        procs.tree_context_switches(server_pid),
                        procs.pg_backends_cpu(pg_name) if pg_name else {})

            try:
                time.sleep(max(0.0, start_at + warmup - time.time()))
                t0, m0, c0, x0, d0 = sample()
                time.sleep(max(0.0, start_at + warmup + seconds - time.time()))
                t1, m1, c1, x1, d1 = sample()
                scale = seconds / max(t1 - t0, 1e-6)
                box["cpu"] = (c1 - c0) * scale
                box["machine"] = (m1 - m0) * scale
                box["cs"] = (x1 - x0) * scale
                if pg_name:
                    box["db"] = procs.cpu_delta(d0, d1) * scale
            except OSError:  # the server exited during the window: its calls fail, shown
                box.clear()

        res: Result = self.pool.run(job, on_start=sample_server_cpu)
        if res.build_error:
            return report.not_available(key, _short_reason(res.build_error), out_db)
        if res.unimplemented and not res.latencies:
            return report.not_available(key, "UNIMPLEMENTED", out_db)
        r = report.summarize(key, list(res.latencies), seconds, res.errors, box.get("cpu"),
                             res.cpu_seconds, out_db)
        r.first_error = res.first_error
        if total is not None:
            r.total_size, r.total_expected = total
        answered = r.calls + sum(r.errors.values())
        if "cs" in box and answered:
            r.server_cs_per_call = max(0, box["cs"]) / answered  # < 0 if threads ended
        if "db" in box:
            r.db_cpu_pct = box["db"] / seconds * 100
        if "machine" in box and "cpu" in box:
            r.other_cpu_pct = max(0.0, box["machine"] - box["cpu"] - res.cpu_seconds
                                  - box.get("db", 0.0)) / seconds * 100
        if r.status != "ok" and res.first_error:
            r.reason = _short_reason(res.first_error)
        slow = r.calls < MIN_CALLS and sum(r.errors.values()) < MIN_CALLS
        if slow and seconds < self.args.max_seconds and not res.unimplemented:
            longer = self.args.max_seconds if r.calls == 0 else \
                min(self.args.max_seconds, seconds * MIN_CALLS * 1.5 / r.calls)
            log(f"  {key}: only {r.calls} calls in {seconds:g}s; measuring {longer:.0f}s")
            return self.measure(key, db, longer, warmup, pinned=pinned, extended=True)
        if extended:
            r.note = (r.note + "; " if r.note else "") + f"{seconds:.0f}s window (slow row)"
        if self.restarts and row.kind != "echo":
            r.note = (r.note + "; " if r.note else "") + "after a server restart"
        if key == "list_filtered" and "filter_total" in ctx:
            r.note = (f"{ctx['filter_expected']:,} of {self.args.accounts:,} match; "
                      + r.note).rstrip("; ")
        if key == "list_p1000" and ctx.get("page_reached", 1000) != 1000:
            r.note = f"page {ctx['page_reached']} (last page)"
        return r

    def _log_row(self, r: RowResult, tag: str = "") -> None:
        name = f"{r.key}{'@' + r.db if r.db else ''}{tag}"
        if r.status != "ok":
            log(f"  {name:24s} n/a ({r.reason})")
            return
        errs = f", errors {sum(r.errors.values())}" if r.errors else ""
        if r.p50_ms is None:
            log(f"  {name:24s} {r.rps:9,.0f} /s")
            return
        log(f"  {name:24s} {r.rps:9,.0f} rps  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms or 0:7.2f} ms"
            f"  in flight {r.in_flight:4.0f}  srv {r.server_cpu_pct or 0:4.0f}%"
            f"  load {r.load_cpu_pct or 0:4.0f}%"
            + (f"  db {r.db_cpu_pct:4.0f}%" if r.db_cpu_pct is not None else "")
            + f"  other {r.other_cpu_pct:4.0f}%{errs}")

    def jwt_loops(self, algs: list[str], seconds: float) -> dict[str, dict[str, Any]]:
        """PyJWT sign/verify rates per algorithm, in a subprocess pinned to the server's
        core (nothing else of the bench runs meanwhile)."""
        rsa_bits = int(self.server_key.split()[1]) if self.server_key.startswith("RSA ") \
            else 2048
        cpus = self.server_cpus

        def pin() -> None:  # pragma: no cover - runs in the child
            if cpus:
                os.sched_setaffinity(0, cpus)

        out = subprocess.run(
            [procs.python(), "-m", "bench.jwt_loop", "--algs", ",".join(algs), "--seconds",
             str(seconds), "--rsa-bits", str(rsa_bits)], capture_output=True, text=True,
            timeout=60 + 4 * seconds * len(algs), check=False, preexec_fn=pin)
        if out.returncode != 0:
            raise RuntimeError(f"bench.jwt_loop failed:\n{out.stderr[-2000:]}")
        data: dict[str, dict[str, Any]] = json.loads(out.stdout)
        for alg, d in data.items():
            if "error" in d:
                log(f"  PyJWT {alg}: {d['error']}")
            else:
                log(f"  PyJWT {alg:6s} ({d['key']}): sign {d['sign_per_s']:8,.0f}/s  "
                    f"verify {d['verify_per_s']:8,.0f}/s  token {d['token_bytes']} bytes  "
                    f"(had {d.get('cpu_share', 1):.0%} of the core)")
        return data

    def run_pass(self, sections: set[str], wanted: list[str], seconds: float,
                 warmup: float) -> dict[str, Any]:
        """Everything once: {"rows": {rid: RowResult}, "jwt": {alg: rates},
        "create_token": {alg: RowResult}, "token_alg": {alg: alg seen},
        "cores": {key: {"1": RowResult, "2": RowResult}},
        "tracing": {key: {"off": RowResult, "on": RowResult, "spans": per call}}}."""
        out: dict[str, Any] = {"rows": {}, "jwt": {}, "create_token": {}, "token_alg": {},
                               "cores": {}, "tracing": {}}
        res: dict[str, RowResult] = out["rows"]
        per_process = [k for k in wanted if k != "pyjwt_sign"]
        if "pinned" in sections:
            log("per process, SQLite" + (", server pinned to CPU "
                                         f"{sorted(self.server_cpus or [])}" if self.pinned
                                         else "") + ":")
            failed = self.try_start("sqlite", pinned=True)
            for key in per_process:
                r = report.not_available(key, failed) if failed and key != "echo" else \
                    self.measure(key, "sqlite", seconds, warmup)
                self._log_row(r)
                res[r.rid] = r
            self.stop_accounts()
        need_jwt = "algs" in sections or (
            "pyjwt_sign" in wanted and bool({"pinned", "postgres"} & sections))
        if need_jwt:
            algs = list(ALGS) if "algs" in sections else [self.server_alg]
            log("PyJWT loops on the server's core:")
            out["jwt"] = jwt = self.jwt_loops(algs, self._jwt_seconds())
            mine = jwt.get(self.server_alg, {})
            if "pyjwt_sign" in wanted and {"pinned", "postgres"} & sections:
                title = f"PyJWT sign loop ({self.server_alg}, {self.server_key})"
                if "sign_per_s" in mine:
                    res["pyjwt_sign"] = r = report.local_rate("pyjwt_sign", title,
                                                              mine["sign_per_s"])
                    if mine.get("cpu_share", 1.0) < 0.9:
                        r.note += (f"; it had only {mine['cpu_share']:.0%} of the core "
                                   "(the rate is per CPU second)")
                else:
                    res["pyjwt_sign"] = report.not_available("pyjwt_sign",
                                                             mine.get("error", "no result"))
                    res["pyjwt_sign"].title = title
        if "algs" in sections:
            log("CreateToken per signing algorithm (SQLite, pinned):")
            for alg in ALGS:
                refused = _alg_refused(alg)
                if refused:
                    r = report.not_available("create_token", refused)
                elif alg == self.server_alg and "create_token@sqlite" in res:
                    r = res["create_token@sqlite"]
                    out["token_alg"][alg] = self.server_alg
                else:
                    env = self.envs.get("sqlite" if alg == self.server_alg else f"sqlite-{alg}")
                    if env is None:
                        r = report.not_available("create_token", "not set up")
                    elif env.unavailable:
                        r = report.not_available("create_token", env.unavailable)
                    elif failed := self.try_start(env.name, pinned=True):
                        r = report.not_available("create_token", failed)
                    else:
                        out["token_alg"][alg] = _token_alg(env.ctx)
                        r = self.measure("create_token", env.name, seconds, warmup)
                        self.stop_accounts()
                out["create_token"][alg] = r
                self._log_row(r, f" [{alg}]")
        if "cores" in sections:
            log("every core (unpinned, the load shares the machine):")
            for n in (1, 2):
                if n == 2 and not self.has_processes:
                    for key in CORE_ROWS:
                        out["cores"].setdefault(key, {})[str(n)] = report.not_available(
                            key, "no --processes")
                    continue
                failed = self.try_start("sqlite", pinned=False, processes=n, tag=f"-p{n}")
                for key in CORE_ROWS:
                    r = report.not_available(key, failed) if failed else \
                        self.measure(key, "sqlite", seconds, warmup, pinned=False)
                    self._log_row(r, f" [--processes {n}]")
                    out["cores"].setdefault(key, {})[str(n)] = r
                self.stop_accounts()
        if "postgres" in sections:
            env = self.envs["postgres"]
            # the echo is shared: measured here only when the SQLite rows were not
            keys = [k for k in per_process if rows.BY_KEY[k].per_db
                    or (k == "echo" and "pinned" not in sections)]
            log("per process, PostgreSQL" + (", server pinned" if self.pinned else "") + ":")
            failed = None if env.unavailable else self.try_start("postgres", pinned=True)
            for key in keys:
                r = report.not_available(key, failed, "postgres") if failed and key != "echo" \
                    else self.measure(key, "postgres", seconds, warmup)
                self._log_row(r)
                res[r.rid] = r
            self.stop_accounts()
        if "tracing" in sections:
            self.tracing_rows(out["tracing"], seconds, warmup)
        if "watch" in sections:
            out["watch"] = self.watch_fanout(seconds, warmup)
        return out

    def watch_fanout(self, seconds: float, warmup: float) -> str:
        """WatchEvents fan-out (issue 15): WATCH_STREAMS streams open on one server
        (SQLite, pinned) while WATCH_WRITERS writers rename accounts as fast as they can;
        the events/s delivered to all the streams, beside the events/s committed (each
        event reaches every stream: the full fan-out is WATCH_STREAMS times that)."""
        from accounts.v1 import account_pb2, account_service_pb2, account_service_pb2_grpc

        failed = self.try_start("sqlite", pinned=True, tag="-watch", extra=[
            "--grpc-max-streams-per-peer", str(WATCH_STREAMS), "--drain-delay", "0"])
        if failed:
            return f"n/a ({failed})"
        ctx = self.envs["sqlite"].ctx
        admin = rows.bearer(ctx["admin_token"])
        delivered = [0] * WATCH_STREAMS
        committed = [0]
        stop = threading.Event()
        channels = [grpc.insecure_channel(ctx["grpc_address"]) for _ in range(4)]
        stubs = [account_service_pb2_grpc.AccountServiceStub(ch) for ch in channels]
        calls = [stubs[i % 4].WatchEvents(account_service_pb2.WatchEventsRequest(),
                                          metadata=admin) for i in range(WATCH_STREAMS)]

        def read(i: int) -> None:
            with contextlib.suppress(grpc.RpcError):
                for _ in calls[i]:
                    delivered[i] += 1

        def write(i: int) -> None:
            while not stop.is_set():
                stubs[i % 4].UpdateAccount(account_service_pb2.UpdateAccountRequest(
                    account=account_pb2.Account(id=ctx["account_id"], name=f"w{i}-{time.time()}"),
                    update_mask={"paths": ["name"]}), metadata=admin, timeout=30)
                committed[0] += 1

        threads = [threading.Thread(target=read, args=(i,), daemon=True)
                   for i in range(WATCH_STREAMS)]
        threads += [threading.Thread(target=write, args=(i,), daemon=True)
                    for i in range(WATCH_WRITERS)]
        try:
            for t in threads:
                t.start()
            time.sleep(warmup + 1.0)  # every stream open, the poller warm
            d0, c0, t0 = sum(delivered), committed[0], time.monotonic()
            time.sleep(seconds)
            d1, c1, t1 = sum(delivered), committed[0], time.monotonic()
        finally:
            stop.set()
            for c in calls:
                c.cancel()
            for ch in channels:
                ch.close()
            self.stop_accounts()
        rate_in, rate_out = (c1 - c0) / (t1 - t0), (d1 - d0) / (t1 - t0)
        text = (f"{WATCH_STREAMS} streams, {WATCH_WRITERS} writers: {rate_in:,.0f} events/s "
                f"committed, {rate_out:,.0f} events/s delivered "
                f"({rate_out / max(rate_in * WATCH_STREAMS, 1e-9):.2f} of the full fan-out)")
        log(f"  WatchEvents fan-out: {text}")
        return text

    def tracing_rows(self, out: dict[str, Any], seconds: float, warmup: float) -> None:
        """Each row on a server of its own, tracing off, then on; the server stops after
        each row (exporting what it has batched: --drain-delay 0), so the spans the sink
        received are the row's."""
        if self.sink is None:
            self.sink = OtlpSink()
        log("tracing off and on (SQLite, pinned; on: every call sampled, spans exported over "
            f"OTLP/HTTP to {self.sink.url}):")
        for key in TRACING_ROWS:
            for mode, flags in (("off", []), ("on", ["--otlp-endpoint", self.sink.url])):
                spans = self.sink.spans
                failed = self.try_start("sqlite", pinned=True, tag=f"-trace-{mode}",
                                        extra=["--drain-delay", "0", *flags])
                r = report.not_available(key, failed) if failed else \
                    self.measure(key, "sqlite", seconds, warmup)
                self.stop_accounts()
                self._log_row(r, f" [tracing {mode}]")
                out.setdefault(key, {})[mode] = r
                if mode == "on" and r.status == "ok" and r.rps:
                    # the calls of warm-up and window at the window's rate, and the probe
                    calls = r.rps * (warmup + seconds) + 1
                    out[key]["spans"] = (self.sink.spans - spans) / calls

    def _jwt_seconds(self) -> float:
        if self.args.jwt_seconds is not None:
            return float(self.args.jwt_seconds)
        return 0.5 if self.args.quick else 2.0

    def sweep(self, sizes: list[int], seconds: float, warmup: float) -> list[dict[str, Any]]:
        points = []
        fixed = self.args.sweep_max_rpcs
        log(f"pool-size sweep {sizes} with {self.concurrency} calls in flight; max concurrent "
            "RPCs " + (f"{fixed}" if fixed else "= the server's default") + ":")
        for n in sizes:
            self.stop_servers()
            self.workers = n
            self.start_echo()
            self.start_accounts("sqlite", workers=n, max_rpcs=fixed or None, tag=f"-w{n}")
            echo = self.measure("echo", "sqlite", seconds, warmup)
            me = self.measure("getme_jwt", "sqlite", seconds, warmup)
            ok = me.status == "ok" and echo.status == "ok"
            point = {
                "workers": n, "max_rpcs": fixed or "default",
                "getme": f"{me.rps:,.0f}" if me.status == "ok" else f"n/a ({me.reason})",
                "p50": f"{me.p50_ms:.2f}" if me.status == "ok" else "-",
                "p99": f"{me.p99_ms:.2f}" if me.status == "ok" else "-",
                "echo": f"{echo.rps:,.0f}" if echo.status == "ok" else "n/a",
                "ratio": f"{me.rps / echo.rps:.2f}" if ok else "-",
                "cpu": f"{me.server_cpu_pct:.0f}%" if me.status == "ok" else "-",
                "us": f"{me.server_us_per_call:,.0f}" if me.status == "ok" else "-",
                "cs": f"{me.server_cs_per_call:.0f}" if me.status == "ok" else "-",
                "errors": ", ".join(f"{k} x{v}" for k, v in me.errors.items()) or "0",
                "getme_rps": me.rps, "echo_rps": echo.rps,
            }
            log(f"  workers {n:3d}: GetMe {point['getme']} rps, echo {point['echo']} rps")
            points.append(point)
        self.stop_accounts()
        return points


# -- the passes, folded ----------------------------------------------------------------------
def fold_algs(passes: list[dict[str, Any]], server_alg: str) -> list[AlgResult]:
    out = []
    for alg in ALGS:
        a = AlgResult(alg)
        rates = [p["jwt"].get(alg) for p in passes if p["jwt"].get(alg)]
        ok = [x for x in rates if "sign_per_s" in x]
        if not ok:
            if not rates:
                continue
            a.error = _short_reason(str(rates[0].get("error", "no result")))
        else:
            a.key = ok[0]["key"]
            a.sign_per_s = max(x["sign_per_s"] for x in ok)
            a.verify_per_s = max(x["verify_per_s"] for x in ok)
            a.token_bytes = ok[0]["token_bytes"]
            a.sign_spread = report.spread(x["sign_per_s"] for x in ok)
            a.cpu_share = min(float(x.get("cpu_share", 1.0)) for x in ok)
        cts = [p["create_token"][alg] for p in passes if alg in p["create_token"]]
        if cts:
            best = report.best_of([{"c": c} for c in cts])["c"]
            a.create_token = best
            if best.status == "ok" and a.sign_per_s:
                a.ratio = best.rps / a.sign_per_s
            per_pass = []
            for p in passes:
                c, j = p["create_token"].get(alg), p["jwt"].get(alg) or {}
                if c is not None and c.status == "ok" and j.get("sign_per_s"):
                    per_pass.append(c.rps / j["sign_per_s"])
            a.spread = report.spread(per_pass)
        seen = {p["token_alg"].get(alg) for p in passes} - {None}
        a.server_alg = ",".join(sorted(seen))
        if seen and seen != {alg}:
            a.note = f"the server's tokens were {a.server_alg}, not {alg}"
        if alg == server_alg:
            a.note = (a.note + "; " if a.note else "") + "the server's default (CreateToken " \
                "row of the per-process table)"
        out.append(a)
    return out


def fold_cores(passes: list[dict[str, Any]]) -> list[CoresResult]:
    out = []
    for key in CORE_ROWS:
        runs = [p["cores"][key] for p in passes if key in p["cores"]]
        if not runs:
            continue
        c = CoresResult(key, rows.BY_KEY[key].title)
        for n in ("1", "2"):
            rs = [r[n] for r in runs if n in r]
            if rs:
                setattr(c, "one" if n == "1" else "two",
                        report.best_of([{"x": r} for r in rs])["x"])
        report.cores_compare(c)
        c.spread = report.spread(
            r["2"].rps / r["1"].rps for r in runs
            if "1" in r and "2" in r and r["1"].status == "ok" and r["2"].status == "ok"
            and r["1"].rps > 0)
        out.append(c)
    return out


def fold_tracing(passes: list[dict[str, Any]]) -> list[TracingResult]:
    out = []
    for key in TRACING_ROWS:
        runs = [p["tracing"][key] for p in passes if key in p["tracing"]]
        if not runs:
            continue
        t = TracingResult(key, rows.BY_KEY[key].title)
        for mode in ("off", "on"):
            rs = [r[mode] for r in runs if mode in r]
            if rs:
                setattr(t, mode, report.best_of([{"x": r} for r in rs])["x"])
        t.cost_us = report.tracing_cost(t.off, t.on)
        t.spread = report.spread(report.tracing_cost(r.get("off"), r.get("on")) for r in runs)
        spans = [r["spans"] for r in runs if "spans" in r]
        t.spans_per_call = max(spans) if spans else None
        out.append(t)
    return out


def _passes_json(passes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    def row(r: RowResult) -> dict[str, Any]:
        d = asdict(r)
        return {k: d[k] for k in ("key", "db", "status", "reason", "rps", "p50_ms", "p99_ms",
                                  "errors", "in_flight", "server_us_per_call", "other_cpu_pct",
                                  "ratio_echo", "ratio_baseline")}

    return [{
        "rows": [row(r) for r in p["rows"].values()],
        "jwt": p["jwt"],
        "create_token": {a: row(r) for a, r in p["create_token"].items()},
        "cores": {k: {n: row(r) for n, r in v.items()} for k, v in p["cores"].items()},
        "tracing": {k: {m: row(r) if isinstance(r, RowResult) else r for m, r in v.items()}
                    for k, v in p["tracing"].items()},
        "watch": p.get("watch"),
    } for p in passes]


# -- helpers ---------------------------------------------------------------------------------
def _short_reason(why: str) -> str:
    why = why.replace("\n", " ")
    return why if len(why) <= 72 else why[:69] + "..."


def _copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database no one has open (its -wal too, if any)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(src)) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(src, dst)


def _engine(url: str) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(url)


def _middle_account_id(db_url: str) -> str:
    import sqlalchemy as sa

    from accounts_grpc.store.tables import accounts

    engine = _engine(db_url)
    try:
        with engine.connect() as c:
            n = c.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one()
            return str(c.execute(sa.select(accounts.c.id).order_by(accounts.c.create_time)
                                 .offset(n // 2).limit(1)).scalar_one())
    finally:
        engine.dispose()


def _open_accounts(db_url: str) -> int:
    """The accounts an admin's unfiltered ListAccounts lists: the open ones."""
    import sqlalchemy as sa

    from accounts_grpc.store.tables import accounts

    engine = _engine(db_url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(accounts)
                                 .where(accounts.c.closed.is_(False))).scalar_one())
    finally:
        engine.dispose()


def _signing_key(env: DbEnv) -> tuple[str, str]:
    """(alg, key type) the server signed the admin's token with: the token's header, the
    key's JWK in the database."""
    import jwt
    import sqlalchemy as sa

    from accounts_grpc.store.tables import signing_keys

    token = env.ctx.get("admin_token")
    if not token:
        alg = str(_settings_default("signing_alg"))
        return alg, "RSA 2048" if alg.startswith("RS") else "?"
    header = jwt.get_unverified_header(token)
    alg, kid = str(header.get("alg")), header.get("kid")
    engine = _engine(env.url)
    try:
        with engine.connect() as c:
            jwk = c.execute(sa.select(signing_keys.c.public_jwk)
                            .where(signing_keys.c.kid == kid)).scalar_one_or_none()
    finally:
        engine.dispose()
    jwk = json.loads(jwk) if isinstance(jwk, str) else (jwk or {})
    if jwk.get("kty") == "RSA":
        import base64

        n = jwk["n"] + "=" * (-len(jwk["n"]) % 4)
        return alg, f"RSA {len(base64.urlsafe_b64decode(n)) * 8}"
    return alg, str(jwk.get("crv") or jwk.get("kty") or "?")


def _token_alg(ctx: dict[str, Any]) -> str | None:
    """The alg in the header of a token CreateToken answers now."""
    import jwt
    from accounts.v1 import session_service_pb2, session_service_pb2_grpc

    try:
        with grpc.insecure_channel(ctx["grpc_address"]) as ch:
            r = session_service_pb2_grpc.SessionServiceStub(ch).CreateToken(
                session_service_pb2.CreateTokenRequest(
                    grant_type="client_credentials", client_id=ctx["admin_client_id"],
                    client_secret=ctx["admin_client_secret"]), timeout=30)
        return str(jwt.get_unverified_header(r.access_token).get("alg"))
    except (grpc.RpcError, KeyError, ValueError):
        return None


def _pg_conninfo(admin_url: str, dbname: str | None = None) -> str:
    from urllib.parse import urlsplit, urlunsplit

    url = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    if dbname is None:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _pg_url(admin_url: str, dbname: str) -> str:
    return _pg_conninfo(admin_url, dbname).replace("postgresql://", "postgresql+psycopg://", 1)


def _pg_reachable(admin_url: str) -> str | None:
    """None if PostgreSQL answers on ``admin_url``; else a short reason ("-": none given)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(_pg_conninfo(admin_url), connect_timeout=3) as c:
            c.execute("SELECT 1")
    except Exception as e:
        return _short_reason(str(e).strip().splitlines()[0] if str(e).strip() else "-")
    return None


def _pg_create(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_pg_conninfo(admin_url), autocommit=True, connect_timeout=5) as c:
        c.execute(f'CREATE DATABASE "{name}"')


def _pg_drop(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_pg_conninfo(admin_url), autocommit=True, connect_timeout=5) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _meta(args: argparse.Namespace, b: Bench, seconds: float, warmup: float,
          passes: int, started: datetime.datetime) -> dict[str, Any]:
    import jwt
    import sqlalchemy

    return {
        "date": started.isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "grpcio": grpc.__version__, "sqlalchemy": sqlalchemy.__version__,
        "pyjwt": jwt.__version__,
        "grpc_workers": b.workers, "load_procs": args.procs,
        "clients_per_proc": b.clients_per_proc, "concurrency": b.concurrency,
        "client": args.client, "channels_per_proc": args.channels,
        "seconds": seconds, "warmup": warmup, "passes": passes, "accounts": args.accounts,
        "server_alg": f"{b.server_alg} ({b.server_key})",
        "processes_flag": b.has_processes,
        "database": "SQLite (WAL), temp file" + (
            "; PostgreSQL " + ("n/a" if b.envs.get("postgres") is None
                               or b.envs["postgres"].unavailable else "bench_* database")
            if "postgres" in b.envs else ""),
        "pinned": (f"servers on CPU {sorted(b.server_cpus)}, load on {sorted(b.load_cpus or [])}"
                   if b.server_cpus else "no"),
    }


def _header(meta: dict[str, Any]) -> str:
    if meta["pinned"] != "no":
        cores = (f"Per-process tables: {meta['pinned']}; the PyJWT loops run alone on the "
                 f"server's CPU.")
    else:
        cores = (f"Not pinned: the load generator competes with the server for the same "
                 f"{meta['cpus']} cores.")
    return (f"accounts-grpc bench, {meta['date']}: {meta['cpus']} CPUs, Python {meta['python']}, "
            f"grpcio {meta['grpcio']}, PyJWT {meta['pyjwt']}; server --grpc-workers "
            f"{meta['grpc_workers']} (echo the same), signing {meta['server_alg']}, "
            f"{meta['database']}, {meta['accounts']:,} seeded accounts.\n"
            f"Load: {meta['load_procs']} processes x {meta['clients_per_proc']} "
            f"{'asyncio tasks' if meta['client'] == 'aio' else 'threads'} = "
            f"{meta['concurrency']} calls in flight, {meta['channels_per_proc']} channels per "
            f"process, closed loop, {meta['warmup']:g}s warm-up + {meta['seconds']:g}s per row, "
            f"best of {meta['passes']} pass{'es' if meta['passes'] != 1 else ''}. {cores}")


TRACING_TITLE = ("Tracing (SQLite, pinned; off: no OTLP endpoint, nothing installed; on: "
                 "every call sampled, spans exported over OTLP/HTTP to a local sink; cost: "
                 "the server CPU per call tracing adds, spread over the passes):")

FOOTNOTES = """\
x echo: rps / bare echo rps. vs baseline: rps / the named row's rps, same database (the
aim's ratio); spread: min/median/max of that ratio over the passes, each pass on its own.
met: every part of the aim (ratio, p99, errors summed over all passes, total_size).
in flight: mean calls in flight seen by the clients (Little's law). srv CPU: the server
process(es), 100% = one core; srv us/call: server CPU time per answered call (the load
generator does not inflate it); cs/call: the server's context switches per call (threads
trading the GIL); load CPU: the load processes (they have one core when pinned); db CPU:
the PostgreSQL backends of the bench database (not pinned); other CPU: the rest of the
machine. PyJWT rates are per CPU second of the loop (robust to a shared core). GetMe,
GetAccount and ListAccounts run as the bootstrap admin (JWT)."""


def _sections(args: argparse.Namespace) -> set[str]:
    got = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = got - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {sorted(unknown)}; known: {list(SECTIONS)}")
    return got


def _wanted(args: argparse.Namespace) -> list[str]:
    spec = [k.strip() for k in args.rows.split(",") if k.strip()]
    if spec == ["all"]:
        wanted = [r.key for r in rows.ROWS]
    elif spec:
        unknown = [k for k in spec if k not in rows.BY_KEY]
        if unknown:
            raise SystemExit(f"unknown rows: {unknown}; known: {list(rows.BY_KEY)}")
        wanted = [r.key for r in rows.ROWS if r.key in spec]
    else:
        wanted = [r.key for r in rows.ROWS if not r.extra]
    if "echo" not in wanted:
        wanted.insert(0, "echo")  # the ceiling is always measured in the same run
    if "create_token" in wanted and "pyjwt_sign" not in wanted:
        wanted.append("pyjwt_sign")  # CreateToken's baseline
    return wanted


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    seconds = args.seconds or (1.5 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    passes = max(1, args.repeat if args.repeat is not None else (1 if args.quick else 3))
    sizes = [int(x) for x in args.sweep_workers.split(",") if x.strip()]
    if args.sweep_only and not sizes:
        raise SystemExit("--sweep-only needs --sweep-workers")
    sections = set() if args.sweep_only else _sections(args)
    wanted = _wanted(args)
    b = Bench(args)

    def cleanup() -> None:
        b.kill_all()
        if b.pg_dbname:
            _pg_drop(b.pg_admin, b.pg_dbname)

    timer = procs.guard_run("bench", args.timeout, cleanup)
    t0 = time.monotonic()
    started = datetime.datetime.now()
    try:
        b.pool = LoadPool(args.procs)
        b.prepare(sections, wanted)
        b.pool.wait_up()
        runs: list[dict[str, Any]] = []
        for n in range(passes if sections else 0):
            log(f"pass {n + 1}/{passes} ({time.monotonic() - t0:.0f}s since the start)")
            runs.append(b.run_pass(sections, wanted, seconds, warmup))
        results = report.best_of([r["rows"] for r in runs]) if runs else {}
        algs = fold_algs(runs, b.server_alg) if "algs" in sections else []
        cores = fold_cores(runs) if "cores" in sections else []
        tracing = fold_tracing(runs) if "tracing" in sections else []
        points = b.sweep(sizes, seconds, warmup) if sizes else []
        meta = _meta(args, b, seconds, warmup, passes, started)
        meta["wall_seconds"] = round(time.monotonic() - t0)
        out = [_header(meta)]
        if results:
            out += ["", "Per process (one server process; ratios within the run):",
                    report.format_text(results, b.concurrency), "", FOOTNOTES]
        if algs:
            out += ["", "Signing algorithms (PyJWT on the server's core, one thread; "
                    "CreateToken: the server signing with each, SQLite, pinned):",
                    report.algs_text(algs)]
        if cores:
            out += ["", "Every core (SQLite, unpinned, the load generator on the same 2 cores; "
                    f"--processes 2 against --processes 1{'' if b.has_processes else ': n/a'}):",
                    report.cores_text(cores)]
        if tracing:
            out += ["", TRACING_TITLE, report.tracing_text(tracing)]
        if any("watch" in r for r in runs):
            out += ["", "WatchEvents fan-out (SQLite, pinned; per pass):",
                    *(f"  {r['watch']}" for r in runs if "watch" in r)]
        if points:
            out += ["", "Pool-size sweep (GetMe with a JWT; both servers restarted per size; "
                    "rps counts answered calls only):", report.sweep_text(points)]
        print("\n".join(out), flush=True)
        log(f"bench: {time.monotonic() - t0:.0f}s in all")
        if not args.no_write:
            _write(Path(args.out), meta, results, algs, cores, tracing, points, runs,
                   b.concurrency)
        if b.died:
            log(f"bench: {'; '.join(sorted(b.died))}: a server exited during the run "
                "(logs above)")
            return 1
        return 0
    except KeyboardInterrupt:
        log("bench: interrupted; stopping servers")
        return 130
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as e:
        log(f"bench: {e}")
        return 2
    finally:
        timer.cancel()
        b.close()


def _write(stem: Path, meta: dict[str, Any], results: dict[str, RowResult],
           algs: list[AlgResult], cores: list[CoresResult], tracing: list[TracingResult],
           points: list[dict[str, Any]], runs: list[dict[str, Any]],
           concurrency: int) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    md = ["# accounts-grpc bench", "", _header(meta), ""]
    if results:
        md += ["## Per process", "", report.format_markdown(results, concurrency), "",
               FOOTNOTES, ""]
    if algs:
        md += ["## Signing algorithms", "", report.algs_markdown(algs), ""]
    if cores:
        md += ["## Every core", "", report.cores_markdown(cores), ""]
    if tracing:
        md += ["## Tracing", "", TRACING_TITLE, "", report.tracing_markdown(tracing), ""]
    if points:
        md += ["## Pool-size sweep", "", "```", report.sweep_text(points), "```", ""]
    md += ["Reproduce: `make bench` (flags: `make bench BENCH_ARGS='--quick'`, "
           "`python -m bench.run --help`)."]
    Path(f"{stem}.md").write_text("\n".join(md) + "\n")
    Path(f"{stem}.json").write_text(
        report.to_json(results, meta, points, algs=algs, cores=cores, tracing=tracing,
                       passes=_passes_json(runs)) + "\n")
    log(f"wrote {stem}.md and {stem}.json")


if __name__ == "__main__":
    sys.exit(main())
