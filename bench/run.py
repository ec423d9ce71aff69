"""`make bench`: the real server under a bounded closed-loop load, beside a bare grpcio echo.

What it does, in order (everything on 127.0.0.1, in a fresh temp directory):

1. Seeds ``--accounts`` (100,000) accounts straight into a new SQLite database after the
   Alembic migrations (``bench/seed.py`` says why: speed), then ``accounts-grpc bootstrap
   --json`` (a subprocess) makes the platform admin.
2. Starts two server processes with the same ``--grpc-workers``: the bare echo
   (``bench/echo_server.py``) and ``python -m accounts_grpc.cli serve`` on free ports,
   ``--log-level WARNING``, the key-encryption key file in the temp dir.
3. Sets up the rest through the public API (``bench/fixtures.py``).
4. For each row: one probe call (a row whose RPC is UNIMPLEMENTED, or fails, prints
   "n/a (...)" and is skipped), then ``--procs`` load processes with ``--concurrency``
   client threads in all call back to back for ``--warmup`` + ``--seconds``; only calls
   completing in the measured window count.
5. Prints the table and writes it to ``bench/results/latest.md`` (markdown, with the
   settings) and ``latest.json`` (``--out`` changes the stem, ``--no-write`` skips it).
6. ``--sweep-workers 4,8,16,64`` then restarts both servers per pool size and measures
   GetMe (JWT) and echo at each (``--sweep-max-rpcs``: the server's default, = workers,
   unless given, so a pool smaller than the client count shows its RESOURCE_EXHAUSTED).

The load generator shares the machine's cores with the servers, so absolute rps are a
lower bound of what the server could do alone; compare the same-run ratios, and the
"srv us/call" column (server CPU time per answered call), which the load generator
does not inflate; "cs/call" counts the server's context switches per call (threads
handing the GIL to each other). "other CPU" is what the rest of the machine used in the
window (from /proc/stat); a row where it reached 15% of a core is marked NOISY, and
``--repeat N`` keeps each row's best of N passes. ``--pin`` holds each server to one CPU
and the load to the others (a diagnostic: it shows what cross-core GIL hand-offs cost).
A row with fewer than 30 calls in its window is measured again over a longer one (at
most ``--max-seconds``).

Servers are killed on any exit (finally, Ctrl-C, SIGTERM, a ``--timeout`` watchdog, and
PR_SET_PDEATHSIG if this process is killed outright); exit status 0, 1 if a server died
during the run, 2 if the set-up failed, 130 if interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from bench import fixtures, procs, report, rows, seed
from bench.load import Job, LoadPool, Result
from bench.report import RowResult

RESULTS = Path(__file__).parent / "results"
MIN_CALLS = 30  # a row with fewer calls in its window is measured again, longer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=None,
                   help="measured seconds per row [4; 1 with --quick]")
    p.add_argument("--warmup", type=float, default=None,
                   help="warm-up seconds per row [1; 0.3 with --quick]")
    p.add_argument("--concurrency", type=int, default=8,
                   help="client threads in all, split over --procs [8]")
    p.add_argument("--procs", type=int, default=2, help="load processes [2]")
    p.add_argument("--channels", choices=("per-thread", "shared"), default="per-thread",
                   help="one gRPC channel (TCP connection) per client thread, or one per "
                        "load process [per-thread]")
    p.add_argument("--max-seconds", type=float, default=15.0,
                   help=f"a slow row with < {MIN_CALLS} calls is re-measured over a longer "
                        "window, at most this long [15]")
    p.add_argument("--pin", action="store_true",
                   help="pin each server to the first CPU and the load processes to the "
                        "others (sched_setaffinity): no cross-core GIL hand-offs in the server, "
                        "and the load never steals its core; off by default (not how it is "
                        "deployed)")
    p.add_argument("--quick", action="store_true",
                   help="short windows (1 s measured, 0.3 s warm-up) for a smoke run")
    p.add_argument("--rows", default="",
                   help="comma-separated row keys to run (default: all): "
                        + ",".join(r.key for r in rows.ROWS))
    p.add_argument("--repeat", type=int, default=1,
                   help="measure the whole table this many times and keep each row's best "
                        "run (other load on the machine only ever slows a run down) [1]")
    p.add_argument("--accounts", type=int, default=100_000, help="accounts to seed [100000]")
    p.add_argument("--grpc-workers", type=int, default=0,
                   help="--grpc-workers for both servers (0: the server's default)")
    p.add_argument("--sweep-workers", default="",
                   help="comma-separated pool sizes, e.g. 4,8,16,64: after the table, restart "
                        "the servers with each and measure GetMe (JWT) and echo")
    p.add_argument("--sweep-max-rpcs", type=int, default=0,
                   help="--grpc-max-concurrent-rpcs asked for during the sweep (0: the "
                        "server's default, = workers, so a pool smaller than the client count "
                        "shows its RESOURCE_EXHAUSTED answers; the server clamps it to the "
                        "workers today) [0]")
    p.add_argument("--sweep-only", action="store_true", help="skip the table, run the sweep")
    p.add_argument("--out", default=str(RESULTS / "latest"),
                   help="write <out>.md and <out>.json [bench/results/latest]")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--timeout", type=float, default=1200.0,
                   help="hard limit for the whole run, seconds; then everything is killed")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (DB, logs)")
    return p


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _server_default_workers() -> int:
    from accounts_grpc.config import Settings

    return int(Settings().grpc_workers)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="accounts-bench-"))
        self.db_url = f"sqlite:///{self.tmp / 'accounts.db'}"
        self.kek = self.tmp / "accounts.kek"
        self.servers: list[procs.Proc] = []
        self.pool: LoadPool | None = None
        self.workers = args.grpc_workers or _server_default_workers()
        self.threads_per_proc = max(1, -(-args.concurrency // args.procs))
        self.ctx: dict[str, Any] = {}
        self.missing: dict[str, str] = {}
        self.died: set[str] = set()
        self.restarts = 0
        ncpu = len(os.sched_getaffinity(0))
        pin = args.pin and ncpu >= 2
        cpus = sorted(os.sched_getaffinity(0))
        self.server_cpus: set[int] | None = {cpus[0]} if pin else None
        self.load_cpus: set[int] | None = set(cpus[1:]) if pin else None

    # -- processes -----------------------------------------------------------------------
    def start_servers(self, workers: int, max_rpcs: int | None = None, tag: str = "") -> None:
        self._server_args = (workers, max_rpcs, tag)
        echo, echo_addr = procs.echo_server(self.tmp, workers, cpus=self.server_cpus)
        self.servers.append(echo)
        self.echo = echo
        self.ctx.update(echo_address=echo_addr)
        self._start_accounts()

    def _start_accounts(self) -> None:
        workers, max_rpcs, tag = self._server_args
        srv = procs.accounts_server(self.tmp, self.db_url, self.kek, workers,
                                    max_rpcs=max_rpcs, tag=tag, cpus=self.server_cpus)
        self.servers.append(srv.proc)
        self.server = srv.proc
        self.ctx.update(grpc_address=srv.grpc_address, http_port=srv.http_port)

    def _reachable(self) -> bool:
        """Does the accounts server still accept connections on both its ports?"""
        host, port = str(self.ctx["grpc_address"]).rsplit(":", 1)
        for p in (int(port), int(self.ctx["http_port"])):
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
        target.stop()
        if target in self.servers:
            self.servers.remove(target)
        self._start_accounts()
        log(f"  restarted the accounts server ({self.restarts} of at most 2 restarts)")
        return True

    def stop_servers(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        self.stop_servers()
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- set-up --------------------------------------------------------------------------
    def prepare(self) -> None:
        n = self.args.accounts
        log(f"seeding {n:,} accounts into {self.db_url} ...")
        took = seed.seed_accounts(self.db_url, n)
        log(f"  seeded in {took:.1f}s")
        out = subprocess.run(
            [procs.python(), "-m", "accounts_grpc.cli", "bootstrap", "--json",
             "--database-url", self.db_url, "--key-encryption-key-file", str(self.kek),
             "--log-level", "WARNING"],
            capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"accounts-grpc bootstrap failed:\n{out.stdout}\n{out.stderr}")
        boot = json.loads(out.stdout.strip().splitlines()[-1])
        self.ctx.update(admin_client_id=boot["client_id"],
                        admin_client_secret=boot["client_secret"],
                        platform_account_id=boot["account_id"])
        self.ctx["account_id"] = _middle_account_id(self.db_url)

    def setup_data(self) -> None:
        log("set-up through the public API:")
        page = min(1000, max(1, -(-(self.args.accounts + 2) // rows.PAGE_SIZE)))
        self.missing = fixtures.run_setup(self.ctx, page=page, log=log)

    # -- measuring -----------------------------------------------------------------------
    def probe(self, key: str) -> str | None:
        """One call from this process; None if it worked, else why the row is n/a."""
        row = rows.BY_KEY[key]
        address = str(self.ctx["echo_address" if row.kind == "echo" else "grpc_address"])
        ch = grpc.insecure_channel(address) if row.kind != "http" else None
        try:
            rows.build_call(key, self.ctx, ch, 0)()
            return None
        except Exception as e:
            code = rows.error_code(e)
            return code if code == "UNIMPLEMENTED" else f"{code}: {rows.error_detail(e)}"
        finally:
            if ch is not None:
                ch.close()

    def measure(self, key: str, seconds: float, warmup: float, *,
                extended: bool = False) -> RowResult:
        row = rows.BY_KEY[key]
        lacking = [k for k in row.needs if k not in self.ctx]
        if lacking:
            return report.not_available(
                key, _short_reason(self.missing.get(lacking[0], f"no {lacking[0]}")))
        target = self.echo if row.kind == "echo" else self.server
        if not target.alive():
            if not self._revive(target):
                return report.not_available(key, f"{target.name} exited")
            target = self.server
        why = self.probe(key)
        if why is not None and target is self.server and not self._reachable():
            # draining or hung after a signal: stop it for good, then start a fresh one
            target.stop(grace=15)
            if not self._revive(target):
                return report.not_available(key, f"{target.name} stopped answering")
            target = self.server
            why = self.probe(key)
        if why is not None:
            return report.not_available(key, _short_reason(why))
        assert self.pool is not None
        job = Job(key, self.ctx, self.threads_per_proc, self.args.channels,
                  warmup=warmup, seconds=seconds)
        server_pid = target.pid
        box: dict[str, Any] = {}

        def sample_server_cpu(start_at: float) -> None:
            try:
                time.sleep(max(0.0, start_at + warmup - time.time()))
                c0, m0 = procs.cpu_seconds(server_pid), procs.machine_busy_seconds()
                x0 = procs.context_switches(server_pid)
                time.sleep(max(0.0, start_at + warmup + seconds - time.time()))
                box["cpu"] = procs.cpu_seconds(server_pid) - c0
                box["machine"] = procs.machine_busy_seconds() - m0
                box["cs"] = procs.context_switches(server_pid) - x0
            except OSError:  # the server exited during the window: its calls fail, shown
                box.clear()

        res: Result = self.pool.run(job, on_start=sample_server_cpu)
        if res.build_error:
            return report.not_available(key, _short_reason(res.build_error))
        if res.unimplemented and not res.latencies:
            return report.not_available(key, "UNIMPLEMENTED")
        r = report.summarize(key, list(res.latencies), seconds, res.errors, box.get("cpu"),
                             res.cpu_seconds)
        r.first_error = res.first_error
        answered = r.calls + sum(r.errors.values())
        if "cs" in box and answered:
            r.server_cs_per_call = max(0, box["cs"]) / answered  # < 0 if threads ended
        if "machine" in box and "cpu" in box:
            r.other_cpu_pct = max(0.0, box["machine"] - box["cpu"] - res.cpu_seconds) \
                / seconds * 100
        if r.status != "ok" and res.first_error:
            r.reason = _short_reason(res.first_error)
        slow = r.calls < MIN_CALLS and sum(r.errors.values()) < MIN_CALLS
        if slow and seconds < self.args.max_seconds and not res.unimplemented:
            longer = self.args.max_seconds if r.calls == 0 else \
                min(self.args.max_seconds, seconds * MIN_CALLS * 1.5 / r.calls)
            log(f"  {key}: only {r.calls} calls in {seconds:g}s; measuring {longer:.0f}s")
            return self.measure(key, longer, warmup, extended=True)
        if extended:
            r.note = (r.note + "; " if r.note else "") + f"{seconds:.0f}s window (slow row)"
        if self.restarts and row.kind != "echo":
            r.note = (r.note + "; " if r.note else "") + "after a server restart"
        if key == "list_filtered" and "filter_total" in self.ctx:
            r.note = (f"{self.ctx['filter_total']:,} of {self.args.accounts:,} match; "
                      + r.note).rstrip("; ")
        if key == "list_p1000" and self.ctx.get("page_reached", 1000) != 1000:
            r.note = f"page {self.ctx['page_reached']} (last page)"
        return r

    def run_table(self, seconds: float, warmup: float) -> dict[str, RowResult]:
        wanted = [k.strip() for k in self.args.rows.split(",") if k.strip()] or \
            [r.key for r in rows.ROWS]
        unknown = [k for k in wanted if k not in rows.BY_KEY]
        if unknown:
            raise SystemExit(f"unknown rows: {unknown}; known: {list(rows.BY_KEY)}")
        if "echo" not in wanted:
            wanted.insert(0, "echo")  # the ceiling is always measured in the same run
        results: dict[str, RowResult] = {}
        passes = max(1, self.args.repeat)
        log(f"measuring {len(wanted)} rows, {warmup:g}s warm-up + {seconds:g}s each"
            + (f", {passes} passes (best of {passes} per row)" if passes > 1 else "") + ":")
        for n in range(passes):
            if passes > 1:
                log(f" pass {n + 1}/{passes}")
            for key in wanted:
                if key in results and results[key].status != "ok":
                    continue  # n/a stays n/a
                r = self.measure(key, seconds, warmup)
                if r.status == "ok":
                    errs = f", errors {sum(r.errors.values())}" if r.errors else ""
                    log(f"  {key:18s} {r.rps:9,.0f} rps  p50 {r.p50_ms:6.2f} ms  "
                        f"p99 {r.p99_ms:7.2f} ms  srv {r.server_cpu_pct:4.0f}%  "
                        f"load {r.load_cpu_pct:4.0f}%  other {r.other_cpu_pct:4.0f}%{errs}")
                else:
                    log(f"  {key:18s} n/a ({r.reason})")
                best = results.get(key)
                if best is None or (r.status == "ok" and r.rps > best.rps):
                    results[key] = r
        report.compare(results)
        return results

    def sweep(self, sizes: list[int], seconds: float, warmup: float) -> list[dict[str, Any]]:
        points = []
        total = self.threads_per_proc * self.args.procs
        fixed = self.args.sweep_max_rpcs
        log(f"pool-size sweep {sizes} with {total} clients; max concurrent RPCs "
            + (f"{fixed}" if fixed else "= workers (the server's default)") + ":")
        for n in sizes:
            self.stop_servers()
            max_rpcs = fixed or n
            self.start_servers(n, max_rpcs=max_rpcs, tag=f"-w{n}")
            echo = self.measure("echo", seconds, warmup)
            me = self.measure("getme_jwt", seconds, warmup)
            ok = me.status == "ok" and echo.status == "ok"
            point = {
                "workers": n, "max_rpcs": max_rpcs,
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
        return points


def _short_reason(why: str) -> str:
    why = why.replace("\n", " ")
    return why if len(why) <= 72 else why[:69] + "..."


def _middle_account_id(db_url: str) -> str:
    import sqlalchemy as sa

    from accounts_grpc.store.tables import accounts

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as c:
            n = c.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one()
            return str(c.execute(sa.select(accounts.c.id).order_by(accounts.c.create_time)
                                 .offset(n // 2).limit(1)).scalar_one())
    finally:
        engine.dispose()


def _meta(args: argparse.Namespace, b: Bench, seconds: float, warmup: float) -> dict[str, Any]:
    import sqlalchemy

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "grpcio": grpc.__version__, "sqlalchemy": sqlalchemy.__version__,
        "grpc_workers": b.workers, "load_procs": args.procs,
        "threads_per_proc": b.threads_per_proc, "channels": args.channels,
        "seconds": seconds, "warmup": warmup, "accounts": args.accounts,
        "database": "SQLite (WAL), temp file",
        "pinned": (f"servers on CPU {sorted(b.server_cpus)}, load on {sorted(b.load_cpus or [])}"
                   if b.server_cpus else "no"),
    }


def _header(meta: dict[str, Any]) -> str:
    if meta["pinned"] != "no":
        cores = (f"Pinned: {meta['pinned']} (each server is held to one core; the load "
                 f"does not compete with it).")
    else:
        cores = (f"The load generator competes with the server for the same {meta['cpus']} "
                 f"cores: rps are lower bounds; ratios are same-run.")
    return (f"accounts-grpc bench, {meta['date']}: {meta['cpus']} CPUs, Python {meta['python']}, "
            f"grpcio {meta['grpcio']}; server --grpc-workers {meta['grpc_workers']} "
            f"(echo the same), {meta['database']}, {meta['accounts']:,} seeded accounts.\n"
            f"Load: {meta['load_procs']} processes x {meta['threads_per_proc']} threads, closed "
            f"loop, {meta['channels']} channels, {meta['warmup']:g}s warm-up + "
            f"{meta['seconds']:g}s per row. {cores}")


FOOTNOTES = """\
x echo: rps / bare echo rps. vs baseline: rps / the named row's rps (the issue's aim).
srv CPU: server process CPU over the window (100% = one core); srv us/call: server CPU
time per answered call (not inflated by the load generator); cs/call: the server's
context switches per call (threads trading the GIL). REST rows use http.client
keep-alive connections, one per client thread. GetMe/GetAccount/List* run as the
bootstrap admin (JWT); ListMyUserGroups as a member machine user (JWT) in 3 groups.
Reference (DESIGN.md): FlexMeasures REST ~130 req/s for one account, ~10 req/s for a
filtered page, same machine."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 4.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    sizes = [int(x) for x in args.sweep_workers.split(",") if x.strip()]
    if args.sweep_only and not sizes:
        raise SystemExit("--sweep-only needs --sweep-workers")
    b = Bench(args)

    def watchdog() -> None:
        log(f"bench: --timeout {args.timeout:.0f}s reached; killing everything")
        for p in list(b.servers):
            if p.popen is not None:
                p.popen.kill()
        os._exit(3)

    timer = threading.Timer(args.timeout, watchdog)
    timer.daemon = True
    timer.start()

    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        b.prepare()
        b.start_servers(b.workers)
        b.pool = LoadPool(args.procs, cpus=b.load_cpus)
        b.pool.wait_up()
        b.setup_data()
        meta = _meta(args, b, seconds, warmup)
        results: dict[str, RowResult] = {}
        if not args.sweep_only:
            results = b.run_table(seconds, warmup)
        points = b.sweep(sizes, seconds, warmup) if sizes else []
        out = [_header(meta)]
        if results:
            out += ["", report.format_text(results), "", FOOTNOTES]
        if points:
            out += ["", "Pool-size sweep (GetMe with a JWT; both servers restarted per size; "
                    "rps counts answered calls only):",
                    report.sweep_text(points)]
        print("\n".join(out), flush=True)
        if not args.no_write:
            _write(Path(args.out), meta, results, points)
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
           points: list[dict[str, Any]]) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    md = ["# accounts-grpc bench", "", _header(meta), ""]
    if results:
        md += [report.format_markdown(results), "", FOOTNOTES, ""]
    if points:
        md += ["## Pool-size sweep", "", "```", report.sweep_text(points), "```", ""]
    md += ["Reproduce: `make bench` (flags: `make bench BENCH_ARGS='--quick'`, "
           "`python -m bench.run --help`)."]
    Path(f"{stem}.md").write_text("\n".join(md) + "\n")
    Path(f"{stem}.json").write_text(report.to_json(results, meta, points) + "\n")
    log(f"wrote {stem}.md and {stem}.json")


if __name__ == "__main__":
    sys.exit(main())
