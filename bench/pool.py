"""`python -m bench.pool`: the database pool on PostgreSQL, before and after the fix.

The issue: "The pool keeps 8 connections but allows 72 (8 + 64 overflow). Overflow
connections are closed on return, so under load they are reopened constantly." This
runs one ``serve`` process (``--processes 1``) twice on the same fresh PostgreSQL
database, with the same load:

- **before**: ``--db-pool-size 8 --db-max-overflow 64`` (the old behaviour);
- **after**: the defaults (``--db-pool-size 0``: sized from the workers, at most 16;
  ``--db-max-overflow 0``; a caller waits up to ``--db-pool-timeout`` for a connection,
  then gets UNAVAILABLE ``DATABASE_BUSY``).

For each, the rows CreateToken (client credentials: a write transaction for the
failed-login counters, rolled back, and a JWT signed) and GetAccount (a primary-key read
with a JWT) are driven in turn by the bench's load processes (``bench/load.py``:
``--procs`` processes of asyncio gRPC clients, ``--concurrency`` (128) calls in flight
in all, closed loop), ``--warmup`` (2 s) then ``--seconds`` (8 s) measured per row.
Only calls completing in the measured window count.

"new PG sessions/s" is the change of ``sessions`` in ``pg_stat_database`` (PostgreSQL
14+) for the bench database over the measured window, divided by its length: each one
is a backend PostgreSQL forked for a new connection. The monitor reads it over its own
connection to the admin database (``--pg-admin-url``), so it adds none. A backend
reports its session when it next flushes its statistics (within about a second, or when
it exits), so a window's edges are blurred by that much. "PG backends" is the most
connections to the bench database seen at once in the window (``pg_stat_activity``,
sampled every 0.2 s); "srv CPU" the server process (100% = one core).

How: a database ``bench_pool_<random>`` is created on ``--pg-admin-url``, migrated
(``accounts-grpc migrate``), seeded with ``--accounts`` accounts (COPY), bootstrapped
(``accounts-grpc bootstrap --json``) and set up through the public API
(``bench/fixtures.py``); it is dropped at the end, whatever happens. The server is pinned
to the first CPU and the load to the others when there are two or more (``--no-pin``:
neither); PostgreSQL is never pinned. Exit status 0; 1 if a server died; 2 if PostgreSQL
is not reachable or the set-up failed; 130 if interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench import fixtures, procs, report, rows, seed
from bench.load import Job, LoadPool
from bench.run import (
    PG_ADMIN_URL,
    _middle_account_id,
    _pg_conninfo,
    _pg_create,
    _pg_drop,
    _pg_reachable,
    _pg_url,
)

#: (name, the ``serve`` flags that make it)
CONFIGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("before", ("--db-pool-size", "8", "--db-max-overflow", "64")),
    ("after", ()),
)
ROW_KEYS = ("create_token", "get_account")
HEADERS = ("config", "row", "rps", "p50 ms", "p99 ms", "errors by code",
           "new PG sessions/s", "PG backends", "srv CPU")
_RIGHT = {2, 3, 4, 6, 7, 8}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class PoolRow:
    """One row of the table: a config, an RPC, what the window measured."""
    config: str  # "before" | "after"
    pool: str  # "pool 8 + overflow 64"
    key: str  # a bench.rows key
    status: str = "ok"  # "ok" | "n/a"
    reason: str = ""
    seconds: float = 0.0  # the measured window
    calls: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    sessions: int | None = None  # new PostgreSQL sessions in the window
    peak_backends: int | None = None
    server_cpu_pct: float | None = None

    @property
    def sessions_per_s(self) -> float | None:
        if self.sessions is None or self.seconds <= 0:
            return None
        return self.sessions / self.seconds


def _errors(errors: dict[str, int]) -> str:
    if not any(errors.values()):
        return "0"
    return ", ".join(f"{code} x{n}" for code, n in
                     sorted(errors.items(), key=lambda kv: (-kv[1], kv[0])) if n)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}%"


def table_rows(results: list[PoolRow]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for r in results:
        config = f"{r.config}: {r.pool}"
        title = rows.BY_KEY[r.key].title
        if r.status != "ok":
            out.append((config, title, f"n/a ({r.reason})", "", "", "", "", "", ""))
            continue
        per_s = r.sessions_per_s
        out.append((
            config, title, f"{r.rps:,.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
            _errors(r.errors),
            "-" if per_s is None else f"{per_s:,.1f} ({r.sessions:,} in {r.seconds:g}s)",
            "-" if r.peak_backends is None else str(r.peak_backends),
            _pct(r.server_cpu_pct),
        ))
    return out


def format_text(results: list[PoolRow]) -> str:
    return report._text_table(HEADERS, table_rows(results), _RIGHT, na_col=2)


def format_markdown(results: list[PoolRow]) -> str:
    return report._md_table(HEADERS, table_rows(results))


def summary(results: list[PoolRow]) -> list[str]:
    """One line per row measured in both configs: p99 and sessions/s, after against
    before."""
    lines = []
    by = {(r.config, r.key): r for r in results if r.status == "ok"}
    for key in dict.fromkeys(r.key for r in results):
        b, a = by.get(("before", key)), by.get(("after", key))
        if b is None or a is None:
            continue
        parts = [f"p99 {b.p99_ms:.1f} -> {a.p99_ms:.1f} ms",
                 f"rps {b.rps:,.0f} -> {a.rps:,.0f}"]
        bs, as_ = b.sessions_per_s, a.sessions_per_s
        if bs is not None and as_ is not None:
            parts.append(f"new PG sessions/s {bs:,.1f} -> {as_:,.1f}")
        errs_b, errs_a = sum(b.errors.values()), sum(a.errors.values())
        parts.append(f"errors {errs_b} -> {errs_a}")
        lines.append(f"{rows.BY_KEY[key].title}: " + "; ".join(parts))
    return lines


# -- PostgreSQL (database create/drop and URLs: bench.run's helpers) ---------------------
class Monitor:
    """One autocommit connection to the admin database: sessions and backends of the
    bench database, read fresh each time (no statistics snapshot is kept)."""

    def __init__(self, admin_url: str, dbname: str) -> None:
        import psycopg

        self.dbname = dbname
        self.conn = psycopg.connect(_pg_conninfo(admin_url), autocommit=True,
                                    connect_timeout=5)
        row = self.conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = "
            "'pg_stat_database' AND column_name = 'sessions'").fetchone()
        self.has_sessions = bool(row and row[0])

    def sessions(self) -> int | None:
        if not self.has_sessions:
            return None
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                                (self.dbname,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def backends(self) -> int:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                (self.dbname,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


# -- the run -------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per row [8]")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per row [2]")
    p.add_argument("--concurrency", type=int, default=128,
                   help="calls in flight in all, split over --procs [128]")
    p.add_argument("--procs", type=int, default=2, help="load processes [2]")
    p.add_argument("--channels", type=int, default=8,
                   help="gRPC channels (TCP connections) per load process [8]")
    p.add_argument("--rows", default=",".join(ROW_KEYS),
                   help=f"comma-separated bench rows to drive [{','.join(ROW_KEYS)}]")
    p.add_argument("--accounts", type=int, default=10_000, help="accounts to seed [10000]")
    p.add_argument("--pg-admin-url", default=PG_ADMIN_URL,
                   help="PostgreSQL to create the bench database on (env "
                        "ACCOUNTS_BENCH_PG_ADMIN_URL) [%(default)s]")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server to the first CPU and the load to the others")
    p.add_argument("--out", default="",
                   help="also write <out>.md and <out>.json (default: print only)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="hard limit for the whole run, seconds; then everything is killed "
                        "[600]")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (server logs)")
    return p


def _pool_text(extra: tuple[str, ...]) -> str:
    """What a config's pool is, as the server resolves it (config.py's own rule)."""
    from accounts_grpc.config import Settings

    flags = dict(zip(extra[::2], extra[1::2], strict=True))
    s = Settings(db_pool_size=int(flags.get("--db-pool-size", 0)),
                 db_max_overflow=int(flags.get("--db-max-overflow", 0)))
    size = f"pool {s.pool_size()}" + ("" if s.db_pool_size else " (auto)")
    return f"{size} + overflow {s.db_max_overflow}"


class PoolBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="accounts-bench-pool-"))
        self.kek = self.tmp / "pg.kek"
        self.dbname = f"bench_pool_{secrets.token_hex(4)}"
        self.url = _pg_url(args.pg_admin_url, self.dbname)
        self.created = False
        self.server: procs.Proc | None = None
        self.load: LoadPool | None = None
        self.monitor: Monitor | None = None
        self.ctx: dict[str, Any] = {}
        self.died: list[str] = []
        self.clients_per_proc = max(1, -(-args.concurrency // args.procs))
        cpus = sorted(os.sched_getaffinity(0))
        pinned = not args.no_pin and len(cpus) >= 2
        self.server_cpus: set[int] | None = {cpus[0]} if pinned else None
        self.load_cpus: set[int] | None = set(cpus[1:]) if pinned else None

    def prepare(self) -> None:
        flags = procs.serve_flags()
        for flag in ("--db-pool-size", "--db-max-overflow", "--processes"):
            if flag not in flags:
                raise RuntimeError(f"this tree's `serve` has no {flag}")
        _pg_create(self.args.pg_admin_url, self.dbname)
        self.created = True
        log(f"PostgreSQL database {self.dbname}: migrate, seed "
            f"{self.args.accounts:,} accounts, bootstrap ...")
        procs.cli(["migrate", "--database-url", self.url, "--key-encryption-key-file",
                   str(self.kek), "--log-level", "WARNING"])
        seed.seed_accounts_pg(self.url, self.args.accounts)
        out = procs.cli(["bootstrap", "--json", "--database-url", self.url,
                         "--key-encryption-key-file", str(self.kek), "--log-level", "WARNING"])
        boot = json.loads(out.strip().splitlines()[-1])
        self.ctx.update(admin_client_id=boot["client_id"],
                        admin_client_secret=boot["client_secret"])
        self.monitor = Monitor(self.args.pg_admin_url, self.dbname)
        if not self.monitor.has_sessions:
            log("  pg_stat_database has no sessions column (PostgreSQL < 14): "
                "sessions/s will be '-'")

    def start(self, name: str, extra: tuple[str, ...]) -> None:
        self.stop()
        srv = procs.accounts_server(
            self.tmp, self.url, self.kek, None, tag=f"-{name}", cpus=self.server_cpus,
            processes=1, extra=[*extra, "--drain-delay", "0"])
        self.server = srv.proc
        self.ctx.update(grpc_address=srv.grpc_address, http_port=srv.http_port)
        if "admin_token" not in self.ctx:  # once: the data stays in the database
            missing = fixtures.run_setup(self.ctx, page=None, log=log)
            if "admin_token" in missing:
                raise RuntimeError(f"set-up failed: {missing['admin_token']}")
            self.ctx["account_id"] = _middle_account_id(self.url)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=15)
            self.server = None

    def measure(self, config: str, pool: str, key: str) -> PoolRow:
        out = PoolRow(config, pool, key)
        assert self.server is not None and self.load is not None and self.monitor is not None
        if not self.server.alive():
            out.status, out.reason = "n/a", "the server exited"
            return out
        try:  # one call first: a row that cannot work is n/a, not a table of errors
            with grpc.insecure_channel(self.ctx["grpc_address"]) as ch:
                rows.build_call(key, self.ctx, ch, 0)()
        except Exception as e:
            out.status, out.reason = "n/a", f"{rows.error_code(e)}: {rows.error_detail(e)}"
            return out
        args = self.args
        job = Job(key, self.ctx, self.clients_per_proc, args.channels, warmup=args.warmup,
                  seconds=args.seconds, client="aio", cpus=self.load_cpus)
        box: dict[str, Any] = {}
        monitor, server_pid = self.monitor, self.server.pid

        def sample(start_at: float) -> None:
            """Sessions, backends and CPU at the window's edges (peak backends within)."""
            try:
                time.sleep(max(0.0, start_at + args.warmup - time.time()))
                t0, s0 = time.monotonic(), monitor.sessions()
                c0 = procs.tree_cpu_seconds(server_pid)
                peak = 0
                end = start_at + args.warmup + args.seconds
                while time.time() < end:
                    peak = max(peak, monitor.backends())
                    time.sleep(max(0.0, min(0.2, end - time.time())))
                t1, s1 = time.monotonic(), monitor.sessions()
                c1 = procs.tree_cpu_seconds(server_pid)
                box.update(peak=peak, cpu=(c1 - c0) * args.seconds / max(t1 - t0, 1e-6))
                if s0 is not None and s1 is not None:
                    box["sessions"] = s1 - s0
            except OSError:  # the server exited in the window: its calls fail, shown
                pass

        res = self.load.run(job, on_start=sample)
        if res.build_error:
            out.status, out.reason = "n/a", res.build_error[:72]
            return out
        lat = sorted(res.latencies)
        out.seconds, out.calls = args.seconds, len(lat)
        out.rps = len(lat) / args.seconds
        out.p50_ms = report.percentile(lat, 0.50) * 1000
        out.p99_ms = report.percentile(lat, 0.99) * 1000
        out.errors = dict(res.errors)
        out.sessions = box.get("sessions")
        out.peak_backends = box.get("peak")
        if "cpu" in box:
            out.server_cpu_pct = box["cpu"] / args.seconds * 100
        if not lat:
            out.status = "n/a"
            out.reason = "no successful call" + (f" ({_errors(out.errors)})" if out.errors
                                                  else "")
        return out

    def run(self, keys: list[str]) -> list[PoolRow]:
        results = []
        for name, extra in CONFIGS:
            pool = _pool_text(extra)
            log(f"{name}: serve --processes 1 {' '.join(extra) or '(pool defaults)'} "
                f"-> {pool}")
            self.start(name, extra)
            for key in keys:
                r = self.measure(name, pool, key)
                results.append(r)
                if r.status == "ok":
                    log(f"  {key:14s} {r.rps:7,.0f} rps  p50 {r.p50_ms:7.1f} ms  "
                        f"p99 {r.p99_ms:7.1f} ms  errors {_errors(r.errors)}  "
                        f"sessions {r.sessions}  backends {r.peak_backends}")
                else:
                    log(f"  {key:14s} n/a ({r.reason})")
            if self.server is not None and not self.server.alive():
                self.died.append(f"{name} server: exit {self.server.popen.returncode}"
                                 if self.server.popen else name)
                log(self.server.log_tail(15))
            self.stop()
        return results

    def close(self) -> None:
        if self.load is not None:
            self.load.close()
            self.load = None
        self.stop()
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        if self.created:
            try:
                _pg_drop(self.args.pg_admin_url, self.dbname)
                log(f"dropped PostgreSQL database {self.dbname}")
            except Exception as e:  # reported; the run's result stands
                log(f"bench.pool: could not drop PostgreSQL database {self.dbname}: {e}")
            self.created = False
        if not self.args.keep_tmp:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log(f"kept {self.tmp}")


def _header(args: argparse.Namespace, b: PoolBench, pg_version: str) -> str:
    pin = (f"server pinned to CPU {sorted(b.server_cpus)}, load on "
           f"{sorted(b.load_cpus or [])}" if b.server_cpus else "not pinned")
    return (f"accounts-grpc pool bench, {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"{os.cpu_count()} CPUs, grpcio {grpc.__version__}, {pg_version}; one `serve "
            f"--processes 1` (default --grpc-workers) per config, {pin}.\n"
            f"Load: {args.procs} processes x {b.clients_per_proc} asyncio tasks = "
            f"{args.procs * b.clients_per_proc} calls in flight, {args.channels} channels per "
            f"process, closed loop, {args.warmup:g}s warm-up + {args.seconds:g}s per row; "
            f"{args.accounts:,} seeded accounts.")


FOOTNOTE = """\
new PG sessions/s: change of pg_stat_database.sessions for the bench database over the
measured window / its seconds (in brackets: the sessions and the window). PG backends:
most connections to the bench database at once in the window (sampled every 0.2 s).
srv CPU: the server process (100% = one core). Overflow connections churn only when
calls hand them back to a full pool; when the calls keep every connection busy
(CreateToken here: 64 backends, no new session) the cost is PostgreSQL running 64
backends on the same cores instead of 16."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    keys = [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = [k for k in keys if k not in rows.BY_KEY or rows.BY_KEY[k].kind != "grpc"]
    if unknown:
        raise SystemExit(f"unknown or non-gRPC rows: {unknown}")
    why = _pg_reachable(args.pg_admin_url)
    if why:
        log(f"bench.pool: PostgreSQL not reachable at {args.pg_admin_url}: {why}")
        return 2
    b = PoolBench(args)

    def cleanup() -> None:
        if b.server is not None:
            b.server.kill_now()
        if b.created:
            _pg_drop(args.pg_admin_url, b.dbname)

    timer = procs.guard_run("bench.pool", args.timeout, cleanup)
    t0 = time.monotonic()
    try:
        b.load = LoadPool(args.procs)
        b.prepare()
        b.load.wait_up()
        assert b.monitor is not None
        row = b.monitor.conn.execute("SHOW server_version").fetchone()
        pg_version = f"PostgreSQL {row[0] if row else '?'}"
        results = b.run(keys)
        out = [_header(args, b, pg_version), "", format_text(results), "", FOOTNOTE]
        lines = summary(results)
        if lines:
            out += ["", "after against before:", *(f"  {line}" for line in lines)]
        print("\n".join(out), flush=True)
        log(f"bench.pool: {time.monotonic() - t0:.0f}s in all")
        if args.out:
            stem = Path(args.out)
            stem.parent.mkdir(parents=True, exist_ok=True)
            md = ["# accounts-grpc pool bench", "", _header(args, b, pg_version), "",
                  format_markdown(results), "", FOOTNOTE, "", *(f"- {x}" for x in lines), "",
                  "Reproduce: `.venv/bin/python -m bench.pool`."]
            Path(f"{stem}.md").write_text("\n".join(md) + "\n")
            Path(f"{stem}.json").write_text(json.dumps(
                [{**asdict(r), "sessions_per_s": r.sessions_per_s} for r in results],
                indent=2) + "\n")
            log(f"wrote {stem}.md and {stem}.json")
        if b.died:
            log(f"bench.pool: {'; '.join(b.died)}")
            return 1
        return 0
    except KeyboardInterrupt:
        log("bench.pool: interrupted; stopping the server")
        return 130
    except (RuntimeError, TimeoutError, OSError) as e:
        log(f"bench.pool: {e}")
        return 2
    except Exception as e:  # psycopg errors in the set-up
        log(f"bench.pool: set-up failed: {type(e).__name__}: {e}")
        return 2
    finally:
        timer.cancel()
        b.close()


if __name__ == "__main__":
    sys.exit(main())
