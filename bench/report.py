"""Turn measurements into the table: rps, p50, p99, ratios, aims; text, markdown and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.rows import BY_KEY, ROWS


@dataclass
class RowResult:
    key: str
    title: str
    status: str = "ok"  # "ok" | "n/a"
    reason: str = ""  # why n/a, e.g. "UNIMPLEMENTED"
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    server_cpu_pct: float = 0.0  # the server process, % of one core, over the window
    server_us_per_call: float = 0.0  # server CPU time / calls answered
    server_cs_per_call: float = 0.0  # server context switches per answered call
    load_cpu_pct: float = 0.0  # all load processes together, % of one core
    other_cpu_pct: float = 0.0  # everything else on the machine (noise), % of one core
    ratio_echo: float | None = None
    baseline: str = ""
    ratio_baseline: float | None = None
    aim_text: str = ""
    met: bool | None = None
    note: str = ""


NOISY_PCT = 15.0  # other processes using this much CPU during a window make it suspect


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def summarize(key: str, latencies: list[float], seconds: float, errors: dict[str, int],
              server_cpu: float | None, load_cpu: float) -> RowResult:
    row = BY_KEY[key]
    lat = sorted(latencies)
    r = RowResult(key, row.title, rps=len(lat) / seconds, calls=len(lat), errors=dict(errors),
                  p50_ms=percentile(lat, 0.50) * 1000, p99_ms=percentile(lat, 0.99) * 1000,
                  load_cpu_pct=load_cpu / seconds * 100, note=row.note)
    answered = len(lat) + sum(errors.values())
    if server_cpu is not None:
        r.server_cpu_pct = server_cpu / seconds * 100
        r.server_us_per_call = server_cpu / answered * 1e6 if answered else 0.0
    if not lat:
        r.status, r.reason = "n/a", "no successful call" + (f" ({_errs(errors)})" if errors else "")
    return r


def not_available(key: str, reason: str) -> RowResult:
    row = BY_KEY[key]
    return RowResult(key, row.title, status="n/a", reason=reason, note=row.note)


def compare(results: dict[str, RowResult]) -> None:
    """Fill the ratio, baseline and aim columns (same-run ratios)."""
    echo = results.get("echo")
    for key, r in results.items():
        row = BY_KEY[key]
        r.aim_text = row.aim_text
        if r.status != "ok":
            continue
        if echo is not None and echo.status == "ok" and key != "echo":
            r.ratio_echo = r.rps / echo.rps
        if row.baseline:
            base = results.get(row.baseline)
            r.baseline = BY_KEY[row.baseline].title
            if base is not None and base.status == "ok" and base.rps > 0:
                r.ratio_baseline = r.rps / base.rps
                if row.aim is not None:
                    r.met = r.ratio_baseline >= row.aim - 1e-9


def _errs(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(errors.items()))


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


HEADERS = ("#", "row", "rps", "p50 ms", "p99 ms", "x echo", "vs baseline", "aim", "met",
           "srv CPU", "srv us/call", "cs/call", "load CPU", "other CPU", "notes")


def table_rows(results: dict[str, RowResult]) -> list[tuple[str, ...]]:
    out = []
    for i, row in enumerate(ROWS, 1):
        r = results.get(row.key)
        if r is None:
            continue
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        notes = [r.note] if r.note else []
        if r.errors and r.status == "ok":
            notes.append(f"errors: {_errs(r.errors)}")
        if r.status == "ok" and r.other_cpu_pct >= NOISY_PCT:
            notes.append("NOISY: other processes busy")
        if r.status != "ok":
            vals: tuple[str, ...] = (str(i), r.title, f"n/a ({r.reason})", "", "", "", "",
                                     r.aim_text or "-", "-", "", "", "", "", "",
                                     "; ".join(notes))
        else:
            vs = "-"
            if r.baseline and r.ratio_baseline is not None:
                short = r.baseline.split(" (")[0]
                vs = f"{_f(r.ratio_baseline, '.2f')} x {short}"
            vals = (str(i), r.title, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
                    _f(r.ratio_echo, ".2f") if r.key != "echo" else "1.00", vs,
                    r.aim_text or "-", met, f"{r.server_cpu_pct:.0f}%",
                    f"{r.server_us_per_call:,.0f}", f"{r.server_cs_per_call:.0f}",
                    f"{r.load_cpu_pct:.0f}%",
                    f"{r.other_cpu_pct:.0f}%", "; ".join(notes))
        out.append(vals)
    return out


def format_text(results: dict[str, RowResult]) -> str:
    body = table_rows(results)
    # n/a rows put their reason in the rps column; let it overflow rather than widen the column
    widths = [len(h) for h in HEADERS]
    for vals in body:
        for j, v in enumerate(vals):
            if not (j == 2 and v.startswith("n/a")) and j != len(HEADERS) - 1:
                widths[j] = max(widths[j], len(v))
    right = {0, 2, 3, 4, 5, 9, 10, 11, 12, 13}

    def line(vals: tuple[str, ...]) -> str:
        if vals[2].startswith("n/a"):
            return _na_line(vals, widths)
        cells = [v.rjust(widths[j]) if j in right else v.ljust(widths[j])
                 for j, v in enumerate(vals)]
        return "  ".join(cells).rstrip()

    sep = "  ".join("-" * w for w in widths[:-1]) + "  " + "-" * 5
    return "\n".join([line(HEADERS), sep, *(line(v) for v in body)])


def _na_line(vals: tuple[str, ...], widths: list[int]) -> str:
    head = vals[0].rjust(widths[0]) + "  " + vals[1].ljust(widths[1]) + "  "
    rest = vals[2]
    if vals[7] and vals[7] != "-":
        rest += f"   [aim {vals[7]}]"
    if vals[-1]:
        rest += f"   {vals[-1]}"
    return head + rest


def format_markdown(results: dict[str, RowResult]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for vals in table_rows(results):
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in vals) + " |")
    return "\n".join(lines)


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
            sweep: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"meta": meta, "rows": [asdict(r) for r in results.values()],
                       "sweep": sweep or []}, indent=2, sort_keys=False)
