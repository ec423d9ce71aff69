"""The bench table: ratios, aims and n/a rows (no servers, no I/O)."""

from __future__ import annotations

import json

from bench import report, rows


def _ok(key: str, rps: float, p50: float = 1.0) -> report.RowResult:
    r = report.summarize(key, [p50 / 1000] * int(rps), 1.0, {}, server_cpu=0.5, load_cpu=0.2)
    assert r.status == "ok"
    return r


def _table() -> dict[str, report.RowResult]:
    results = {
        "echo": _ok("echo", 2000),
        "getme_jwt": _ok("getme_jwt", 1100),
        "getme_session": _ok("getme_session", 900),
        "get_account": _ok("get_account", 1000),
        "list_p1": _ok("list_p1", 500),
        "list_p1000": _ok("list_p1000", 400),
        "list_filtered": report.not_available("list_filtered", "UNIMPLEMENTED"),
        "rest_get_account": _ok("rest_get_account", 600),
    }
    report.compare(results)
    return results


def test_ratios_and_aims() -> None:
    r = _table()
    assert r["getme_jwt"].ratio_echo == 1100 / 2000
    assert r["getme_jwt"].met is True
    assert r["getme_session"].met is False  # 0.45 < 0.5
    assert r["list_p1000"].ratio_baseline == 0.8
    assert r["list_p1000"].met is False  # page 1,000 may cost at most 1.2 x page 1 (0.833)
    assert r["rest_get_account"].met is True
    assert r["list_filtered"].met is None  # n/a: no verdict


def test_text_table_has_every_row_and_na_reason() -> None:
    text = report.format_text(_table())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["#", "row", "rps"]
    assert any("n/a (UNIMPLEMENTED)" in ln and "ListAccounts filtered" in ln for ln in lines)
    getme = next(ln for ln in lines if rows.BY_KEY["getme_jwt"].title in ln)
    assert "1,100" in getme and "0.55" in getme and "yes" in getme
    session = next(ln for ln in lines if rows.BY_KEY["getme_session"].title in ln)
    assert "NO" in session
    # the rows come out in the order the table defines, whatever order they were measured in
    order = [ln.split("  ")[0].strip() for ln in lines[2:]]
    assert order == sorted(order, key=int)


def test_markdown_and_json() -> None:
    results = _table()
    md = report.format_markdown(results)
    assert md.count("\n") == len(results) + 1
    assert all(ln.startswith("| ") for ln in md.splitlines() if not ln.startswith("|---"))
    data = json.loads(report.to_json(results, {"cpus": 2}))
    assert {r["key"] for r in data["rows"]} == set(results)


def test_percentile_and_no_calls() -> None:
    assert report.percentile([], 0.5) == 0.0
    assert report.percentile([1.0, 2.0, 3.0], 0.5) == 2.0
    r = report.summarize("get_account", [], 1.0, {"UNAVAILABLE": 3}, None, 0.0)
    assert r.status == "n/a" and "UNAVAILABLE" in r.reason
