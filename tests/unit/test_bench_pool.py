"""The pool bench's table: sessions per second, errors by code, n/a rows (no I/O)."""

from __future__ import annotations

from bench import pool
from bench.pool import PoolRow


def _row(config: str, key: str, **kw: object) -> PoolRow:
    base: dict[str, object] = dict(
        pool="pool 8 + overflow 64" if config == "before" else "pool 16 (auto) + overflow 0",
        seconds=8.0, calls=4000, rps=500.0, p50_ms=120.0, p99_ms=900.0, sessions=800,
        peak_backends=64, server_cpu_pct=70.0)
    base.update(kw)
    return PoolRow(config, key=key, **base)  # type: ignore[arg-type]


def _results() -> list[PoolRow]:
    return [
        _row("before", "create_token", errors={"UNAVAILABLE": 3, "DEADLINE_EXCEEDED": 7}),
        _row("before", "get_account"),
        _row("after", "create_token", rps=700.0, p99_ms=300.0, sessions=0, peak_backends=16),
        PoolRow("after", "pool 16 (auto) + overflow 0", "get_account", status="n/a",
                reason="UNAVAILABLE: the database is busy"),
    ]


def test_sessions_per_second() -> None:
    assert _row("before", "get_account").sessions_per_s == 100.0
    assert _row("before", "get_account", sessions=None).sessions_per_s is None
    assert _row("before", "get_account", seconds=0.0).sessions_per_s is None


def test_table_columns_and_cells() -> None:
    text = pool.format_text(_results())
    lines = text.splitlines()
    for h in ("config", "rps", "p50 ms", "p99 ms", "errors by code", "new PG sessions/s"):
        assert h in lines[0]
    before_ct = next(line for line in lines if line.startswith("before")
                     and "CreateToken" in line)
    # errors by code: most frequent first, every code named
    assert "DEADLINE_EXCEEDED x7, UNAVAILABLE x3" in before_ct
    assert "100.0 (800 in 8s)" in before_ct
    assert "900.0" in before_ct and "64" in before_ct
    after_ct = next(line for line in lines if line.startswith("after")
                    and "CreateToken" in line)
    assert "0.0 (0 in 8s)" in after_ct and " 0  " in after_ct  # no errors: "0"
    na = next(line for line in lines if "n/a" in line)
    assert "n/a (UNAVAILABLE: the database is busy)" in na
    # the columns line up: every full row is as wide as the header's cells
    assert lines[1].startswith("-" * len("after: pool 16 (auto) + overflow 0"))


def test_markdown_and_summary() -> None:
    md = pool.format_markdown(_results())
    assert md.splitlines()[0].startswith("| config | row | rps |")
    assert len(md.splitlines()) == 2 + 4
    lines = pool.summary(_results())
    assert len(lines) == 1  # GetAccount is n/a after: no comparison
    assert lines[0].startswith("CreateToken")
    assert "p99 900.0 -> 300.0 ms" in lines[0]
    assert "new PG sessions/s 100.0 -> 0.0" in lines[0]
    assert "errors 10 -> 0" in lines[0]


def test_pool_text_follows_the_settings_rule() -> None:
    from accounts_grpc.config import Settings

    assert pool._pool_text(("--db-pool-size", "8", "--db-max-overflow", "64")) == \
        "pool 8 + overflow 64"
    assert pool._pool_text(()) == f"pool {Settings().pool_size()} (auto) + overflow 0"
