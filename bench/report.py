"""Turn measurements into the tables: rps, p50, p99, errors, ratios, aims, spreads; text,
markdown and JSON. No servers, no I/O.

Three tables:

- per process (``format_text``/``format_markdown``): one server process pinned to one
  core, a row per RPC and database, each against its baseline row of the same pass;
- signing algorithms (``algs_text``/``algs_markdown``): PyJWT sign/verify per algorithm on
  one core beside CreateToken with the server signing with it;
- every core (``cores_text``/``cores_markdown``): ``--processes 2`` against 1, unpinned;
- tracing (``tracing_text``/``tracing_markdown``): GetMe with OpenTelemetry tracing off
  and on, side by side, and what tracing costs the server per call.

With ``--repeat N`` each row shows its best pass (the most rps: other load only ever
slows a run down), its ratios are those of the best rows, and "spread" gives the min,
median and max of the ratio over the N passes, each pass's ratio from that pass alone.
Errors are summed over all passes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.rows import BY_KEY, ROWS

DBS = ("sqlite", "postgres")


def rid(key: str, db: str = "sqlite") -> str:
    """The id of a row's result: ``key@db``, or ``key`` for a row shared by the databases
    (the echo, the PyJWT loop)."""
    return key if not BY_KEY[key].per_db else f"{key}@{db}"


@dataclass
class RowResult:
    key: str
    title: str
    db: str = ""  # "sqlite" | "postgres"; "" for the shared rows
    status: str = "ok"  # "ok" | "n/a"
    reason: str = ""  # why n/a, e.g. "UNIMPLEMENTED"
    rps: float = 0.0
    p50_ms: float | None = 0.0
    p99_ms: float | None = 0.0
    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    in_flight: float = 0.0  # mean calls in flight the clients saw (Little's law)
    server_cpu_pct: float | None = 0.0  # the server process(es), % of one core, in the window
    server_us_per_call: float | None = 0.0  # server CPU time / calls answered
    server_cs_per_call: float | None = 0.0  # server context switches per answered call
    load_cpu_pct: float | None = 0.0  # all load processes together, % of one core
    db_cpu_pct: float | None = None  # the PostgreSQL backends, % of one core
    other_cpu_pct: float = 0.0  # everything else on the machine (noise), % of one core
    total_size: int | None = None  # ListAccounts' total_size for the first page
    total_expected: int | None = None  # the accounts it should count
    ratio_echo: float | None = None
    baseline: str = ""
    ratio_baseline: float | None = None
    aim_text: str = ""
    met: bool | None = None
    unmet: list[str] = field(default_factory=list)  # which parts of the aim failed
    spread: list[float] | None = None  # min, median, max of ratio_baseline over the passes
    passes: int = 1  # passes that measured this row
    errors_all: dict[str, int] = field(default_factory=dict)  # errors over all passes
    note: str = ""

    @property
    def rid(self) -> str:
        return rid(self.key, self.db or "sqlite")


NOISY_PCT = 15.0  # other processes using this much CPU during a window make it suspect


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def summarize(key: str, latencies: list[float], seconds: float, errors: dict[str, int],
              server_cpu: float | None, load_cpu: float, db: str = "sqlite") -> RowResult:
    row = BY_KEY[key]
    lat = sorted(latencies)
    r = RowResult(key, row.title, db if row.per_db else "", rps=len(lat) / seconds,
                  calls=len(lat), errors=dict(errors), p50_ms=percentile(lat, 0.50) * 1000,
                  p99_ms=percentile(lat, 0.99) * 1000, load_cpu_pct=load_cpu / seconds * 100,
                  in_flight=sum(lat) / seconds, note=row.note, errors_all=dict(errors))
    answered = len(lat) + sum(errors.values())
    if server_cpu is not None:
        r.server_cpu_pct = server_cpu / seconds * 100
        r.server_us_per_call = server_cpu / answered * 1e6 if answered else 0.0
    if not lat:
        r.status, r.reason = "n/a", "no successful call" + (f" ({_errs(errors)})" if errors else "")
    return r


def local_rate(key: str, title: str, per_second: float, note: str = "") -> RowResult:
    """A row computed outside the load generator (the PyJWT loop): a rate, no latencies."""
    row = BY_KEY[key]
    return RowResult(key, title, rps=per_second, p50_ms=None, p99_ms=None,
                     server_cpu_pct=None, server_us_per_call=None, server_cs_per_call=None,
                     load_cpu_pct=None, note=note or row.note)


def not_available(key: str, reason: str, db: str = "sqlite") -> RowResult:
    row = BY_KEY[key]
    return RowResult(key, row.title, db if row.per_db else "", status="n/a", reason=reason,
                     note=row.note)


def compare(results: dict[str, RowResult]) -> None:
    """Fill the ratio, baseline and aim columns (ratios within ``results``: one pass, or
    the best rows of all passes)."""
    echo = results.get("echo")
    for r in results.values():
        row = BY_KEY[r.key]
        r.aim_text = row.aim_text
        r.ratio_echo = r.ratio_baseline = r.met = None
        r.unmet = []
        if r.status != "ok":
            continue
        if echo is not None and echo.status == "ok" and r.key != "echo" and row.kind != "local":
            r.ratio_echo = r.rps / echo.rps
        if not row.baseline:
            continue
        base = results.get(rid(row.baseline, r.db or "sqlite"))
        r.baseline = base.title if base is not None else BY_KEY[row.baseline].title
        if base is not None and base.status == "ok" and base.rps > 0:
            r.ratio_baseline = r.rps / base.rps
        if row.aim is None:
            continue
        if r.ratio_baseline is None:
            continue  # no baseline, no verdict
        if r.ratio_baseline < row.aim - 1e-9:
            r.unmet.append("rps")
        if row.p99_max_ms is not None and (r.p99_ms or 0.0) >= row.p99_max_ms:
            r.unmet.append("p99")
        if row.no_errors and any((r.errors_all or r.errors).values()):
            r.unmet.append("errors")
        if row.exact_total and r.total_size != r.total_expected:
            r.unmet.append("total_size")
        r.met = not r.unmet


def spread(values: Iterable[float | None]) -> list[float] | None:
    """[min, median, max] of the values that are there (None: none are)."""
    vs = sorted(v for v in values if v is not None)
    return [vs[0], statistics.median(vs), vs[-1]] if vs else None


def best_of(passes: list[dict[str, RowResult]]) -> dict[str, RowResult]:
    """Each row's best pass (most rps), with the spread of its ratio over all passes and
    its errors summed over them; ``compare`` is run on every pass and on the result."""
    for p in passes:
        compare(p)
    best: dict[str, RowResult] = {}
    for p in passes:
        for k, r in p.items():
            b = best.get(k)
            if b is None or (r.status == "ok" and (b.status != "ok" or r.rps > b.rps)):
                best[k] = r
    out: dict[str, RowResult] = {}
    for k, b in best.items():
        runs = [p[k] for p in passes if k in p]
        r = RowResult(**{**asdict(b)})
        r.passes = len(runs)
        errors: dict[str, int] = {}
        for x in runs:
            for code, n in x.errors.items():
                errors[code] = errors.get(code, 0) + n
        r.errors_all = errors
        r.spread = spread(x.ratio_baseline for x in runs)
        out[k] = r
    compare(out)
    return out


def _errs(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(errors.items()))


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}%"


def _spread(s: list[float] | None, fmt: str = ".2f") -> str:
    if not s:
        return "-"
    return "/".join(format(v, fmt) for v in s)


def _ordered(results: dict[str, RowResult]) -> list[RowResult]:
    order = {r.key: i for i, r in enumerate(ROWS)}
    return sorted(results.values(),
                  key=lambda r: (order[r.key], DBS.index(r.db) if r.db in DBS else -1))


HEADERS = ("#", "row", "db", "rps", "p50 ms", "p99 ms", "errors", "in flight", "x echo",
           "vs baseline", "spread", "aim", "met", "srv CPU", "srv us/call", "cs/call",
           "load CPU", "db CPU", "other CPU", "notes")
_RIGHT = {0, 3, 4, 5, 6, 7, 8, 13, 14, 15, 16, 17, 18}
_COL = {h: i for i, h in enumerate(HEADERS)}


def _met(r: RowResult) -> str:
    if r.met is None:
        return "-"
    return "yes" if r.met else "NO (" + ", ".join(r.unmet) + ")"


def row_notes(r: RowResult, concurrency: int | None = None) -> list[str]:
    notes = [r.note] if r.note else []
    if r.status != "ok":
        return notes
    if r.total_size is not None:
        exact = r.total_size == r.total_expected
        notes.append(f"total_size {r.total_size:,}" + (
            " exact" if exact else f" but {r.total_expected:,} counted: NOT exact"))
    errs = r.errors_all or r.errors
    if errs:
        notes.append(f"errors: {_errs(errs)}" + (f" (all {r.passes} passes)"
                                                 if r.passes > 1 else ""))
    if concurrency and r.p50_ms is not None and r.in_flight < 0.9 * concurrency:
        notes.append(f"only {r.in_flight:.0f} of {concurrency} in flight")
    if r.other_cpu_pct >= NOISY_PCT:
        notes.append("NOISY: other processes busy")
    return notes


def table_rows(results: dict[str, RowResult], concurrency: int | None = None
               ) -> list[tuple[str, ...]]:
    out = []
    index = {row.key: i for i, row in enumerate(ROWS, 1)}
    for r in _ordered(results):
        i = index[r.key]
        notes = "; ".join(row_notes(r, concurrency))
        if r.status != "ok":
            vals: tuple[str, ...] = (str(i), r.title, r.db or "-", f"n/a ({r.reason})",
                                     *([""] * 7), r.aim_text or "-", "-",
                                     *([""] * 6), notes)
        else:
            vs = "-"
            if r.baseline and r.ratio_baseline is not None:
                vs = f"{r.ratio_baseline:.2f} x {r.baseline.split(' (')[0]}"
            other = f"{r.other_cpu_pct:.0f}%" if r.load_cpu_pct is not None else "-"
            vals = (str(i), r.title, r.db or "-", f"{r.rps:,.0f}", _f(r.p50_ms, ".2f"),
                    _f(r.p99_ms, ".2f"),
                    "-" if r.p50_ms is None else str(sum((r.errors_all or r.errors).values())),
                    "-" if r.p50_ms is None else f"{r.in_flight:.0f}",
                    "1.00" if r.key == "echo" else _f(r.ratio_echo, ".2f"), vs,
                    _spread(r.spread), r.aim_text or "-", _met(r), _pct(r.server_cpu_pct),
                    _f(r.server_us_per_call, ",.0f"), _f(r.server_cs_per_call, ".0f"),
                    _pct(r.load_cpu_pct), _pct(r.db_cpu_pct), other, notes)
        out.append(vals)
    return out


def _text_table(headers: Sequence[str], body: list[tuple[str, ...]], right: set[int],
                na_col: int | None = None) -> str:
    """Aligned columns; the last column is left ragged. A row whose ``na_col`` cell starts
    with "n/a" lets that cell overflow instead of widening the column."""
    widths = [len(h) for h in headers]
    for vals in body:
        for j, v in enumerate(vals):
            if j == len(headers) - 1 or (j == na_col and v.startswith("n/a")):
                continue
            widths[j] = max(widths[j], len(v))

    def line(vals: Sequence[str]) -> str:
        if na_col is not None and vals[na_col].startswith("n/a"):
            head = "  ".join(v.rjust(widths[j]) if j in right else v.ljust(widths[j])
                             for j, v in enumerate(vals[:na_col]))
            rest = [v for v in vals[na_col + 1:] if v and v != "-"]
            return "  ".join([head, vals[na_col], *(f"[{v}]" for v in rest)]).rstrip()
        cells = [v.rjust(widths[j]) if j in right else v.ljust(widths[j])
                 for j, v in enumerate(vals)]
        return "  ".join(cells).rstrip()

    sep = "  ".join("-" * w for w in widths[:-1]) + "  " + "-" * 5
    return "\n".join([line(headers), sep, *(line(v) for v in body)])


def _md_table(headers: Sequence[str], body: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for vals in body:
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in vals) + " |")
    return "\n".join(lines)


def format_text(results: dict[str, RowResult], concurrency: int | None = None) -> str:
    return _text_table(HEADERS, table_rows(results, concurrency), _RIGHT, na_col=3)


def format_markdown(results: dict[str, RowResult], concurrency: int | None = None) -> str:
    return _md_table(HEADERS, table_rows(results, concurrency))


# -- signing algorithms ----------------------------------------------------------------------
@dataclass
class AlgResult:
    alg: str
    key: str = ""  # "RSA 2048", "P-256", "Ed25519"
    sign_per_s: float | None = None  # PyJWT, one thread, the server's core (best pass)
    verify_per_s: float | None = None
    token_bytes: int | None = None
    error: str = ""  # PyJWT could not do it
    create_token: RowResult | None = None  # the server signing with this alg (best pass)
    server_alg: str = ""  # the alg of the tokens CreateToken returned
    ratio: float | None = None  # CreateToken rps / sign/s
    spread: list[float] | None = None  # of ratio over the passes
    sign_spread: list[float] | None = None  # of sign/s over the passes
    cpu_share: float | None = None  # the least share of its core a PyJWT loop had
    note: str = ""


ALG_HEADERS = ("alg", "key", "PyJWT sign/s", "verify/s", "token bytes", "CreateToken rps",
               "p50 ms", "p99 ms", "errors", "x sign loop", "spread", "srv us/call",
               "sign/s spread", "notes")


def algs_rows(algs: list[AlgResult]) -> list[tuple[str, ...]]:
    out = []
    for a in algs:
        ct = a.create_token
        if a.error:
            pyjwt: tuple[str, ...] = (f"n/a ({a.error})", "", "")
        else:
            pyjwt = (_f(a.sign_per_s, ",.0f"), _f(a.verify_per_s, ",.0f"),
                     _f(a.token_bytes, "d"))
        if ct is None:
            server: tuple[str, ...] = ("-", "", "", "", "", "", "")
        elif ct.status != "ok":
            server = (f"n/a ({ct.reason})", "", "", "", "", "", "")
        else:
            server = (f"{ct.rps:,.0f}", _f(ct.p50_ms, ".2f"), _f(ct.p99_ms, ".2f"),
                      str(sum((ct.errors_all or ct.errors).values())), _f(a.ratio, ".2f"),
                      _spread(a.spread), _f(ct.server_us_per_call, ",.0f"))
        notes = [a.note] if a.note else []
        if a.cpu_share is not None and a.cpu_share < 0.9:
            notes.append(f"a PyJWT loop had only {a.cpu_share:.0%} of its core (rates are "
                         "per CPU second)")
        if ct is not None and ct.status == "ok":
            notes += [n for n in row_notes(ct) if n != ct.note]
        out.append((a.alg, a.key, *pyjwt, *server, _spread(a.sign_spread, ",.0f"),
                    "; ".join(notes)))
    return out


def algs_text(algs: list[AlgResult]) -> str:
    return _text_table(ALG_HEADERS, algs_rows(algs), {2, 3, 4, 5, 6, 7, 8, 9, 11})


def algs_markdown(algs: list[AlgResult]) -> str:
    return _md_table(ALG_HEADERS, algs_rows(algs))


# -- every core ------------------------------------------------------------------------------
CORES_AIM = 1.6


@dataclass
class CoresResult:
    key: str
    title: str
    one: RowResult | None = None  # --processes 1 (best pass)
    two: RowResult | None = None  # --processes 2 (best pass), or n/a
    ratio: float | None = None  # two.rps / one.rps
    spread: list[float] | None = None  # of ratio over the passes
    met: bool | None = None


def cores_compare(c: CoresResult) -> None:
    c.ratio = c.met = None
    if c.one is not None and c.two is not None and c.one.status == "ok" \
            and c.two.status == "ok" and c.one.rps > 0:
        c.ratio = c.two.rps / c.one.rps
        c.met = c.ratio >= CORES_AIM - 1e-9


CORES_HEADERS = ("row", "1 proc rps", "p50 ms", "p99 ms", "errors", "srv CPU", "load CPU",
                 "2 procs rps", "p50 ms", "p99 ms", "errors", "srv CPU", "load CPU",
                 "2p / 1p", "spread", "aim", "met", "notes")


def _cores_cells(r: RowResult | None) -> tuple[str, ...]:
    if r is None:
        return ("-", "", "", "", "", "")
    if r.status != "ok":
        return (f"n/a ({r.reason})", "", "", "", "", "")
    return (f"{r.rps:,.0f}", _f(r.p50_ms, ".2f"), _f(r.p99_ms, ".2f"),
            str(sum((r.errors_all or r.errors).values())), _pct(r.server_cpu_pct),
            _pct(r.load_cpu_pct))


def cores_rows(cores: list[CoresResult]) -> list[tuple[str, ...]]:
    out = []
    for c in cores:
        notes = []
        for tag, r in (("1p", c.one), ("2p", c.two)):
            if r is not None and r.status == "ok":
                notes += [f"{tag}: {n}" for n in row_notes(r) if n != r.note]
        met = "-" if c.met is None else ("yes" if c.met else "NO")
        out.append((c.title, *_cores_cells(c.one), *_cores_cells(c.two), _f(c.ratio, ".2f"),
                    _spread(c.spread), f">= {CORES_AIM} x 1 proc", met, "; ".join(notes)))
    return out


def cores_text(cores: list[CoresResult]) -> str:
    return _text_table(CORES_HEADERS, cores_rows(cores),
                       {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})


def cores_markdown(cores: list[CoresResult]) -> str:
    return _md_table(CORES_HEADERS, cores_rows(cores))


# -- tracing ---------------------------------------------------------------------------------
@dataclass
class TracingResult:
    key: str
    title: str
    off: RowResult | None = None  # no OTLP endpoint: nothing installed (best pass)
    on: RowResult | None = None  # every call sampled and exported (best pass)
    cost_us: float | None = None  # on's server CPU per call minus off's
    spread: list[float] | None = None  # of that cost over the passes, each pass's own
    spans_per_call: float | None = None  # spans the sink received per call (estimate)


def tracing_cost(off: RowResult | None, on: RowResult | None) -> float | None:
    """The server CPU time tracing adds to a call, in microseconds."""
    if off is None or on is None or off.status != "ok" or on.status != "ok" \
            or off.server_us_per_call is None or on.server_us_per_call is None:
        return None
    return on.server_us_per_call - off.server_us_per_call


TRACING_HEADERS = ("row", "off rps", "p50 ms", "p99 ms", "srv us/call", "on rps", "p50 ms",
                   "p99 ms", "srv us/call", "cost us/call", "spread", "on / off rps",
                   "spans/call", "notes")


def _tracing_cells(r: RowResult | None) -> tuple[str, ...]:
    if r is None:
        return ("-", "", "", "")
    if r.status != "ok":
        return (f"n/a ({r.reason})", "", "", "")
    return (f"{r.rps:,.0f}", _f(r.p50_ms, ".2f"), _f(r.p99_ms, ".2f"),
            _f(r.server_us_per_call, ",.0f"))


def tracing_rows(results: list[TracingResult]) -> list[tuple[str, ...]]:
    out = []
    for t in results:
        ratio = None
        if t.off is not None and t.on is not None and t.off.status == t.on.status == "ok" \
                and t.off.rps > 0:
            ratio = t.on.rps / t.off.rps
        notes = []
        for tag, r in (("off", t.off), ("on", t.on)):
            if r is not None and r.status == "ok":
                notes += [f"{tag}: {n}" for n in row_notes(r) if n != r.note]
        out.append((t.title, *_tracing_cells(t.off), *_tracing_cells(t.on),
                    _f(t.cost_us, "+,.0f"), _spread(t.spread, "+.0f"), _f(ratio, ".2f"),
                    _f(t.spans_per_call, ".1f"), "; ".join(notes)))
    return out


def tracing_text(results: list[TracingResult]) -> str:
    return _text_table(TRACING_HEADERS, tracing_rows(results),
                       {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})


def tracing_markdown(results: list[TracingResult]) -> str:
    return _md_table(TRACING_HEADERS, tracing_rows(results))


# -- sweep, JSON -----------------------------------------------------------------------------
def sweep_text(points: list[dict[str, Any]]) -> str:
    hdr = ("grpc workers", "max rpcs asked", "GetMe JWT rps", "p50 ms", "p99 ms", "echo rps",
           "x echo", "srv CPU", "srv us/call", "cs/call", "errors")
    body = []
    for p in points:
        body.append((str(p["workers"]), str(p["max_rpcs"]), p["getme"], p["p50"], p["p99"],
                     p["echo"], p["ratio"], p["cpu"], p["us"], p["cs"], p["errors"]))
    widths = [max(len(h), *(len(b[j]) for b in body)) if body else len(h)
              for j, h in enumerate(hdr)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(hdr, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def to_json(results: dict[str, RowResult], meta: dict[str, Any],
            sweep: list[dict[str, Any]] | None = None, *,
            algs: list[AlgResult] | None = None, cores: list[CoresResult] | None = None,
            tracing: list[TracingResult] | None = None,
            passes: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({
        "meta": meta,
        "rows": [asdict(r) for r in _ordered(results)],
        "algs": [asdict(a) for a in algs or []],
        "cores": [asdict(c) for c in cores or []],
        "tracing": [asdict(t) for t in tracing or []],
        "passes": passes or [],
        "sweep": sweep or [],
    }, indent=2, sort_keys=False, default=str)
