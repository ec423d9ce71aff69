"""Key phases on SQLite and PostgreSQL (auth/keys.py): a rotated key is pending (published,
not signing) for a lead that covers every server's key cache and JWKS max-age; every
server switches at its activation time from what it has read; the old key stays until the
longest token lifetime any server recorded; unknown kids wait for the one re-read;
migration 0008. The servers themselves: tests/e2e/test_key_rotation.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from accounts_grpc.auth import keys as keys_mod
from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.keys import KeyStore, SigningKey, load_kek
from accounts_grpc.config import Settings
from accounts_grpc.store import migrate
from accounts_grpc.store.db import Database, create_engine, now_us
from accounts_grpc.store.tables import include_name, metadata, signing_keys

S = 1_000_000  # microseconds


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, key_encryption_key_file=str(tmp_path / "kek"),
                    token_lifetime=600, key_cache_seconds=1, jwks_max_age=1)


def store(db: Database, settings: Settings, **changes: Any) -> KeyStore:
    s = settings.replace(**changes)
    return KeyStore(db, load_kek(s), s)


def row(db: Database, kid: str) -> sa.Row[Any]:
    with db.read() as uow:
        r = uow.conn.execute(sa.select(signing_keys).where(signing_keys.c.kid == kid)).one()
    return r


def count_loads(ks: KeyStore, delay: float = 0.0) -> list[int]:
    """Count (and optionally slow down) the re-reads of ``ks``."""
    calls = [0]
    load = ks._load

    def counted() -> None:
        calls[0] += 1
        if delay:
            time.sleep(delay)
        load()

    ks._load = counted  # type: ignore[method-assign]
    return calls


def at(monkeypatch: pytest.MonkeyPatch, us: int) -> None:
    """Let auth/keys.py see the wall clock at ``us``."""
    monkeypatch.setattr(keys_mod, "now_us", lambda: us)


# -- phases ------------------------------------------------------------------------------------


def test_a_rotated_key_is_published_first_and_signs_at_its_activation(
        db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    server = store(db, settings)
    old = server.ensure_key()
    before = now_us()
    new = store(db, settings, token_lifetime=60).rotate()  # what `keys rotate` does
    lead = (1 + 1 + keys_mod.PUBLISH_MARGIN_SECONDS) * S  # key cache + JWKS max-age + margin
    assert before + lead <= new.activate_time <= now_us() + lead
    assert new.phase(now_us()) == "pending" and new.retire_time is None
    assert row(db, old.kid).retire_time == new.activate_time, "the old key retires then"

    server.refresh()  # what its next re-read (within key_cache_seconds) does
    assert [k["kid"] for k in server.jwks()] == [new.kid, old.kid], "published at once"
    assert server.signing_key().kid == old.kid, "not signing yet"
    assert row(db, new.kid).max_token_lifetime == 600, "recorded when read, before it signs"

    loads = count_loads(server)
    at(monkeypatch, new.activate_time - 1)
    assert server.signing_key().kid == old.kid
    at(monkeypatch, new.activate_time)
    assert server.signing_key().kid == new.kid, "switched at the activation time"
    assert loads == [0], "from what it had read: no re-read at that instant"
    phases = {k.kid: k.phase(new.activate_time) for k in server.list_keys()}
    assert phases == {new.kid: "active", old.kid: "retired"}


def test_the_default_lead_completes_a_rotation_within_two_minutes(
        db: Database, tmp_path: Path, db_url: str) -> None:
    defaults = Settings(database_url=db_url, key_encryption_key_file=str(tmp_path / "kek"))
    server = store(db, defaults)
    server.ensure_key()
    before = now_us()
    new = store(db, defaults).rotate()
    lead = new.activate_time - before
    assert (60 + 30) * S <= lead <= 120 * S


def test_the_lead_covers_the_slowest_server_not_the_rotating_process(
        db: Database, settings: Settings) -> None:
    """A server with a long key cache records it; a rotation from a process with tiny
    settings still publishes the key for that long."""
    slow = store(db, settings, key_cache_seconds=300, jwks_max_age=60)
    old = slow.ensure_key()
    assert row(db, old.kid).max_cache_seconds == 360
    before = now_us()
    new = store(db, settings).rotate()
    assert new.activate_time - before >= (360 + keys_mod.PUBLISH_MARGIN_SECONDS) * S


def test_rotations_chain(db: Database, settings: Settings) -> None:
    first = store(db, settings).ensure_key()
    rotator = store(db, settings)
    second = rotator.rotate()
    third = rotator.rotate(activate_in=0)  # asks for "now": still after the pending one
    assert third.activate_time > second.activate_time
    assert row(db, first.kid).retire_time == second.activate_time
    assert row(db, second.kid).retire_time == third.activate_time
    assert row(db, third.kid).retire_time is None
    kids = [k.kid for k in rotator.list_keys()]
    assert kids == [third.kid, second.kid, first.kid], "newest (latest activation) first"


def test_a_rotation_with_another_key_encryption_key_is_refused(
        db: Database, settings: Settings, tmp_path: Path) -> None:
    store(db, settings).ensure_key()
    other = settings.replace(key_encryption_key_file=str(tmp_path / "other.kek"))
    with pytest.raises(keys_mod.KeyDecryptionError):
        KeyStore(db, load_kek(other), other).rotate()
    with db.read() as uow:
        assert uow.conn.execute(sa.select(sa.func.count()).select_from(signing_keys)).scalar() == 1


# -- lifetimes ---------------------------------------------------------------------------------


def expiry(r: sa.Row[Any]) -> int:
    return int(r.retire_time + (r.max_token_lifetime + r.max_cache_seconds
                                + keys_mod.EXPIRY_MARGIN_SECONDS) * S)


def test_the_old_key_stays_for_the_longest_lifetime_any_server_records(
        db: Database, settings: Settings) -> None:
    week = 7 * 86400
    short, long_ = store(db, settings, token_lifetime=60), store(db, settings, token_lifetime=week)
    old = short.ensure_key()
    long_.ensure_key()
    short.signing_key()  # never lowers it
    assert row(db, old.kid).max_token_lifetime == week
    new = store(db, settings, token_lifetime=5).rotate()  # the rotating process's own: moot
    r = row(db, old.kid)
    assert r.retire_time == new.activate_time
    assert r.expire_time == expiry(r) >= r.retire_time + week * S
    assert r.max_cache_seconds == 2


def test_a_server_that_records_after_the_rotation_extends_the_old_key(
        db: Database, settings: Settings) -> None:
    old = store(db, settings, token_lifetime=60).ensure_key()
    store(db, settings).rotate()
    first = row(db, old.kid).expire_time
    assert first == expiry(row(db, old.kid))
    # a server with longer tokens starts before the activation: it signs with the old key
    # (still active) and first records its lifetime on it
    late = store(db, settings, token_lifetime=86400 * 3)
    assert late.ensure_key().kid == old.kid
    r = row(db, old.kid)
    assert r.max_token_lifetime == 86400 * 3
    assert r.expire_time == expiry(r) == first + (86400 * 3 - 60) * S


def test_a_token_longer_than_the_setting_is_recorded_before_it_is_signed(
        db: Database, settings: Settings) -> None:
    ks = store(db, settings)
    key = ks.ensure_key()
    JwtService(ks, settings).issue(user_id="u", account_id="a", roles=[], kind="MACHINE",
                                   lifetime=5000)
    assert row(db, key.kid).max_token_lifetime == 5000


def test_a_process_that_does_not_sign_records_nothing(db: Database, settings: Settings) -> None:
    """`keys list` and `keys rotate` read the keys without claiming a lifetime."""
    key = store(db, settings, token_lifetime=86400 * 30).ensure_key(signer=False)
    assert row(db, key.kid).max_token_lifetime == 0
    store(db, settings, token_lifetime=86400 * 30).rotate()
    assert row(db, key.kid).max_token_lifetime == 0


# -- unknown kids ------------------------------------------------------------------------------


def test_callers_arriving_during_a_reread_wait_for_it(db: Database, settings: Settings) -> None:
    here = store(db, settings, key_cache_seconds=600)
    here.ensure_key()
    new = store(db, settings).rotate(activate_in=0)  # elsewhere
    loads = count_loads(here, delay=0.3)  # a slow database: calls pile up behind the re-read
    barrier = threading.Barrier(32)
    found: list[SigningKey | None] = []

    def call() -> None:
        barrier.wait()
        found.append(here.verification_key(new.kid))

    threads = [threading.Thread(target=call) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(found) == 32 and all(k is not None and k.kid == new.kid for k in found)
    assert loads == [1], "one re-read answered them all"


def test_random_kids_start_at_most_one_reread_a_second(db: Database, settings: Settings) -> None:
    here = store(db, settings, key_cache_seconds=600)
    here.ensure_key()
    loads = count_loads(here)
    stop = time.monotonic() + 2.5
    misses = [0]

    def hammer() -> None:
        while time.monotonic() < stop:
            assert here.verification_key(uuid.uuid4().hex) is None
            misses[0] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - start
    assert misses[0] > 100
    assert 1 <= loads[0] <= 1 + elapsed / keys_mod.MISS_RELOAD_INTERVAL


# -- the key-encryption key --------------------------------------------------------------------


def test_postgresql_has_no_default_key_encryption_key(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pg = Settings(database_url="postgresql://postgres@127.0.0.1/none")
    with pytest.raises(SystemExit) as e:
        load_kek(pg)
    message = str(e.value)
    assert "\n" not in message and "PostgreSQL needs an explicit key-encryption key" in message
    assert "ACCOUNTS_KEY_ENCRYPTION_KEY" in message and "--key-encryption-key-file" in message
    assert list(tmp_path.rglob("*")) == [], "nothing created"
    # explicit: the key itself, or a named file (generated when missing, with a warning)
    load_kek(pg.replace(key_encryption_key="A" * 43 + "="))
    named = pg.replace(key_encryption_key_file=str(tmp_path / "shared.kek"))
    assert load_kek(named).decrypt(load_kek(named).encrypt(b"x")) == b"x"
    assert [p.name for p in tmp_path.iterdir()] == ["shared.kek"]
    # SQLite keeps its default: a file generated beside the database
    sqlite = Settings(database_url=f"sqlite:///{tmp_path / 'db' / 'a.db'}")
    load_kek(sqlite)
    assert (tmp_path / "db" / "accounts.kek").exists()


# -- migration 0008 ----------------------------------------------------------------------------


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


def test_migration_0008_fills_the_phases_of_existing_keys(engine: sa.Engine) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config()).get_revision("0008")
    assert script is not None and isinstance(script.down_revision, str)
    before = script.down_revision
    migrate.upgrade(engine, before)
    old_keys = sa.table(
        "signing_keys", sa.column("kid"), sa.column("alg"), sa.column("public_jwk", sa.JSON),
        sa.column("private_key_enc"), sa.column("create_time"), sa.column("retire_time"),
        sa.column("expire_time"))
    with engine.begin() as conn:
        conn.execute(old_keys.insert(), [
            {"kid": "retired", "alg": "RS256", "public_jwk": {}, "private_key_enc": "x",
             "create_time": 1 * S, "retire_time": 5 * S, "expire_time": 9 * S},
            {"kid": "active", "alg": "RS256", "public_jwk": {}, "private_key_enc": "x",
             "create_time": 5 * S, "retire_time": None, "expire_time": None},
        ])
    migrate.upgrade(engine)
    with engine.connect() as conn:
        rows = {r.kid: r for r in conn.execute(sa.select(signing_keys))}
    assert rows["active"].activate_time == 5 * S and rows["retired"].activate_time == 1 * S
    assert {r.max_token_lifetime for r in rows.values()} == {86400}
    assert {r.max_cache_seconds for r in rows.values()} == {90}
    assert rows["retired"].expire_time == 9 * S, "kept"

    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_name": include_name})
        diff = compare_metadata(ctx, metadata)
    assert [d for d in diff if "signing_keys" in str(d)] == []

    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, before)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("signing_keys")}
        kids = set(conn.execute(sa.select(old_keys.c.kid)).scalars())
    assert not columns & {"activate_time", "max_token_lifetime", "max_cache_seconds"}
    assert kids == {"retired", "active"}, "the keys themselves stay"
