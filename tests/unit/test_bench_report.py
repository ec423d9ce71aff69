"""The bench tables: ratios, aims, spreads and n/a rows (no servers, no I/O)."""

from __future__ import annotations

import json

from bench import report, rows
from bench.report import rid


def _ok(key: str, rps: float, p50: float = 1.0, db: str = "sqlite",
        errors: dict[str, int] | None = None) -> report.RowResult:
    r = report.summarize(key, [p50 / 1000] * int(rps), 1.0, errors or {}, server_cpu=0.5,
                         load_cpu=0.2, db=db)
    assert r.status == "ok"
    return r


def _pass(scale: float = 1.0) -> dict[str, report.RowResult]:
    rs = [
        _ok("echo", 2000 * scale),
        _ok("getme_jwt", 1300 * scale),
        _ok("get_account", 1000 * scale, errors={"RESOURCE_EXHAUSTED": 2}),
        _ok("list_p1", 600 * scale),
        _ok("list_filtered", 300 * scale),
        report.local_rate("pyjwt_sign", "PyJWT sign loop (RS256, RSA 2048)", 1000),
        _ok("create_token", 400 * scale),
        _ok("getme_jwt", 900 * scale, db="postgres"),
        _ok("get_account", 1000 * scale, p50=60.0, db="postgres"),
        report.not_available("list_p1", "UNIMPLEMENTED", db="postgres"),
    ]
    results = {r.rid: r for r in rs}
    results["list_p1@sqlite"].total_size = results["list_p1@sqlite"].total_expected = 100_002
    return results


def _table() -> dict[str, report.RowResult]:
    results = _pass()
    report.compare(results)
    return results


def test_ids_per_database() -> None:
    assert rid("echo", "postgres") == "echo"  # shared by the databases
    assert rid("pyjwt_sign") == "pyjwt_sign"
    assert rid("getme_jwt") == "getme_jwt@sqlite"
    assert rid("getme_jwt", "postgres") == "getme_jwt@postgres"
    assert _table()["getme_jwt@postgres"].db == "postgres"
    assert _table()["echo"].db == ""


def test_ratios_and_aims() -> None:
    r = _table()
    assert r["getme_jwt@sqlite"].ratio_echo == 1300 / 2000
    assert r["getme_jwt@sqlite"].met is True  # 0.65 >= 0.6, p99 1 ms, no errors
    assert r["get_account@sqlite"].ratio_baseline == 0.5
    assert r["get_account@sqlite"].met is False and r["get_account@sqlite"].unmet == ["errors"]
    assert r["list_p1@sqlite"].ratio_baseline == 0.6 and r["list_p1@sqlite"].met is True
    assert r["list_filtered@sqlite"].met is False  # 0.3 < 0.4
    assert r["create_token@sqlite"].ratio_baseline == 0.4  # x the PyJWT sign loop
    assert r["create_token@sqlite"].met is False
    # PostgreSQL rows are held to PostgreSQL baselines and the shared echo
    assert r["getme_jwt@postgres"].ratio_echo == 900 / 2000
    assert r["get_account@postgres"].ratio_echo == 0.5
    assert r["get_account@postgres"].unmet == ["p99"]  # 60 ms
    assert r["create_token@sqlite"].baseline.startswith("PyJWT sign loop")
    assert r["list_p1@postgres"].met is None  # n/a: no verdict
    assert r["pyjwt_sign"].ratio_echo is None


def test_total_size_must_be_exact() -> None:
    results = _pass()
    results["list_p1@sqlite"].total_size = 100_000
    report.compare(results)
    assert results["list_p1@sqlite"].unmet == ["total_size"]
    text = report.format_text(results)
    assert "NOT exact" in text


def test_best_of_passes_and_spread() -> None:
    passes = [_pass(1.0), _pass(1.2), _pass(0.9)]
    passes[1]["getme_jwt@sqlite"].rps = 1300  # a pass where GetMe lagged the echo
    best = report.best_of(passes)
    echo = best["echo"]
    assert echo.rps == 2400 and echo.passes == 3
    me = best["getme_jwt@sqlite"]
    assert me.rps == 1300 * 0.9 or me.rps == 1300  # the best GetMe pass
    assert me.spread is not None
    lo, med, hi = me.spread
    assert lo == 1300 / 2400 and hi == 0.65 and lo <= med <= hi
    # errors are summed over the passes
    assert best["get_account@sqlite"].errors_all == {"RESOURCE_EXHAUSTED": 6}


def test_text_table_has_every_row_and_na_reason() -> None:
    text = report.format_text(_table(), concurrency=128)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["#", "row", "db", "rps"]
    assert "errors" in lines[0] and "in flight" in lines[0] and "spread" in lines[0]
    assert any("n/a (UNIMPLEMENTED)" in ln and "ListAccounts page 1" in ln
               and "postgres" in ln for ln in lines)
    getme = next(ln for ln in lines if rows.BY_KEY["getme_jwt"].title in ln and "sqlite" in ln)
    assert "1,300" in getme and "0.65" in getme and "yes" in getme
    acct = next(ln for ln in lines if "GetAccount by id" in ln and "sqlite" in ln)
    assert "NO (errors)" in acct and "RESOURCE_EXHAUSTED x2" in acct
    # 1,300 calls of 1 ms in 1 s: 1.3 in flight on average, flagged as short of 128
    assert "only 1 of 128 in flight" in getme
    # rows come out in the table's order, each database beside the other
    order = [ln.split("  ")[0].strip() for ln in lines[2:]]
    assert order == sorted(order, key=int)
    dbs = [ln for ln in lines if "GetMe (JWT)" in ln]
    assert "sqlite" in dbs[0] and "postgres" in dbs[1]


def test_markdown_and_json() -> None:
    results = _table()
    md = report.format_markdown(results)
    assert md.count("\n") == len(results) + 1
    assert all(ln.startswith("| ") for ln in md.splitlines() if not ln.startswith("|---"))
    data = json.loads(report.to_json(results, {"cpus": 2}))
    assert {r["key"] for r in data["rows"]} == {r.key for r in results.values()}
    assert {"algs", "cores", "passes", "sweep"} <= set(data)


def test_percentile_and_no_calls() -> None:
    assert report.percentile([], 0.5) == 0.0
    assert report.percentile([1.0, 2.0, 3.0], 0.5) == 2.0
    r = report.summarize("get_account", [], 1.0, {"UNAVAILABLE": 3}, None, 0.0)
    assert r.status == "n/a" and "UNAVAILABLE" in r.reason
    assert report.spread([]) is None and report.spread([None, 2.0, 1.0, 3.0]) == [1.0, 2.0, 3.0]


def test_in_flight_is_littles_law() -> None:
    r = report.summarize("echo", [0.05] * 2560, 1.0, {}, None, 0.0)
    assert abs(r.in_flight - 128) < 1e-6


def test_algs_table() -> None:
    ct = _ok("create_token", 400)
    algs = [
        report.AlgResult("RS256", "RSA 2048", 1000.0, 20000.0, 825, create_token=ct,
                         ratio=0.4, spread=[0.35, 0.4, 0.42], sign_spread=[900, 950, 1000]),
        report.AlgResult("ES256", "P-256", 8000.0, 2500.0, 569,
                         create_token=report.not_available("create_token", "not set up")),
        report.AlgResult("EdDSA", error="NotImplementedError: no Ed25519"),
    ]
    text = report.algs_text(algs)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["alg", "key", "PyJWT"]
    rs = next(ln for ln in lines if ln.startswith("RS256"))
    assert "1,000" in rs and "20,000" in rs and "825" in rs and "400" in rs and "0.40" in rs
    assert "n/a (not set up)" in next(ln for ln in lines if ln.startswith("ES256"))
    assert "n/a (NotImplementedError" in next(ln for ln in lines if ln.startswith("EdDSA"))
    assert report.algs_markdown(algs).count("\n") == len(algs) + 1


def test_cores_table() -> None:
    c = report.CoresResult("getme_jwt", "GetMe (JWT)", one=_ok("getme_jwt", 1000),
                           two=_ok("getme_jwt", 1700))
    report.cores_compare(c)
    assert c.ratio == 1.7 and c.met is True
    na = report.CoresResult("get_account", "GetAccount by id", one=_ok("get_account", 900),
                            two=report.not_available("get_account", "no --processes"))
    report.cores_compare(na)
    assert na.ratio is None and na.met is None
    text = report.cores_text([c, na])
    assert "1.70" in text and "yes" in text
    assert "n/a (no --processes)" in text
