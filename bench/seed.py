"""Seed N accounts straight into the (migrated) database, before the server starts.

Why not through the API: 100,000 CreateAccount calls (each also creates a first user and an
audit event, in its own transaction) would take minutes; one SQLAlchemy Core executemany
in a single transaction takes a few seconds. The schema still comes from the Alembic
migrations (``store.migrate.upgrade``), and the rows use the same table definitions the
server reads, so the server sees exactly what it would have written.

PostgreSQL (``seed_accounts_pg``): the schema comes from ``accounts-grpc migrate`` (run
first, as a deployment would), then the same rows go in with one ``COPY`` (psycopg 3),
then ``ANALYZE`` so the planner has statistics for the 100,000 rows at once, as it would
in a database that has been serving for a while (autovacuum would take a minute or so).
The account-count triggers (migration 0007) fire for COPY as for any insert.

Names are "<word> <word> <number>"; one account in ``NEEDLE_EVERY`` also has the word
``NEEDLE`` in its name, so ``filter: NEEDLE`` matches a small, known fraction.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from typing import Any

from accounts_grpc.store import migrate
from accounts_grpc.store.db import create_engine
from accounts_grpc.store.tables import accounts

NEEDLE = "kestrel"
NEEDLE_EVERY = 100  # 1% of the seeded accounts match the filtered-list row
_W1 = ("North", "South", "Green", "Bright", "Rapid", "Solid", "Blue", "Grand", "Prime", "Urban",
       "Coastal", "Alpine", "Metro", "Silver", "Golden", "Royal", "Smart", "Clear", "Open", "Swift")
_W2 = ("Energy", "Power", "Grid", "Homes", "Logistics", "Farms", "Retail", "Systems", "Holdings",
       "Partners", "Works", "Labs", "Motors", "Foods", "Housing", "Charging", "Mobility", "Solar",
       "Wind", "Storage")


def seed_accounts(database_url: str, n: int, batch: int = 20_000) -> float:
    """Migrate the schema, insert ``n`` open accounts in one transaction; return seconds taken."""
    t0 = time.perf_counter()
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        migrate.upgrade(engine)
        rows = account_rows(n)
        with engine.begin() as conn:
            # a big page cache for this one connection: the random UUID keys otherwise
            # thrash the default 2 MB cache while six indexes are maintained
            conn.exec_driver_sql("PRAGMA cache_size=-262144")
            while True:
                chunk = list(itertools.islice(rows, batch))
                if not chunk:
                    break
                conn.execute(accounts.insert(), chunk)
    finally:
        engine.dispose()
    return time.perf_counter() - t0


def account_rows(n: int) -> Iterator[dict[str, Any]]:
    """The ``n`` seeded accounts, oldest first, 1 ms apart, all in the past."""
    base = time.time_ns() // 1000 - (n + 1) * 1000
    rnd = random.Random()
    for i in range(n):
        name = f"{_W1[i % 20]} {_W2[(i // 20) % 20]} {i:06d}"
        if i % NEEDLE_EVERY == 37:
            name = f"{_W1[i % 20]} {NEEDLE.title()} {_W2[(i // 20) % 20]} {i:06d}"
        email = f"acct{i:06d}@seed.example.com"
        t = base + i * 1000
        yield {
            "id": _uuid4(rnd),
            "name": name,
            "email": email,
            "email_lower": email,
            "roles": [],
            "consultancy_account_id": None,
            "primary_color": "",
            "secondary_color": "",
            "logo_url": "",
            "closed": False,
            "create_time": t,
            "update_time": t,
            "activity_time": None,
            "etag": f"{rnd.getrandbits(128):032x}",
        }


def seed_accounts_pg(database_url: str, n: int) -> float:
    """Insert ``n`` open accounts into an already migrated PostgreSQL database with one
    COPY, then ANALYZE; return seconds taken."""
    import json

    import psycopg

    t0 = time.perf_counter()
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    cols = [c.name for c in accounts.columns]
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur, \
                cur.copy(f"COPY accounts ({', '.join(cols)}) FROM STDIN") as copy:
            for r in account_rows(n):
                r["roles"] = json.dumps(r["roles"])
                copy.write_row([r[c] for c in cols])
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
    return time.perf_counter() - t0


def _uuid4(rnd: random.Random) -> str:
    """A random (version 4) UUID string; uuid.uuid4() is the slow part of seeding."""
    bits = rnd.getrandbits(128) & ~(0xF000 << 64) & ~(0xC << 60)  # clear version, variant
    h = f"{bits | (0x4000 << 64) | (0x8 << 60):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def expected_matches(n: int) -> int:
    return sum(1 for i in range(n) if i % NEEDLE_EVERY == 37)
