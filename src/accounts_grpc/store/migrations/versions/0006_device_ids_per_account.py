"""device ids per account: device_id and meter_id are unique inside an account

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 01:00:00

Until now ``devices.device_id`` and ``devices.meter_id`` were each unique on the whole
platform, so ``RegisterDevices`` answered ALREADY_EXISTS for an id registered in *any*
account: an account-admin could learn which ids other tenants hold. A tenant's registry
is its own (the same physical device may be registered by two customers, e.g. after a
resale), so both are now unique per account: ``(account_id, device_id)`` and
``(account_id, meter_id)``. NULLs stay distinct, as before (a device may lack either id).

Every device lookup by these ids is scoped to one account (``store/partitions.py``
``registered``, ``store/users.py`` ``devices_in_account``); the new indexes serve them.

Upgrading never fails: the old indexes were stricter. Downgrading does when two
accounts now hold the same id (the old platform-wide index cannot be rebuilt); it says
which ids and changes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: column -> (the per-account index, the platform-wide index it replaces)
INDEXES = {
    "device_id": ("uq_devices_account_id_device_id", "uq_devices_device_id"),
    "meter_id": ("uq_devices_account_id_meter_id", "uq_devices_meter_id"),
}


def upgrade() -> None:
    for column, (per_account, global_) in INDEXES.items():
        op.create_index(per_account, "devices", ["account_id", column], unique=True)
        op.drop_index(global_, table_name="devices")


def downgrade() -> None:
    bind = op.get_bind()
    devices = sa.table(
        "devices", sa.column("account_id"), sa.column("device_id"), sa.column("meter_id")
    )
    shared: list[str] = []
    for column in INDEXES:
        col = devices.c[column]
        rows = bind.execute(
            sa.select(col)
            .where(col.is_not(None))
            .group_by(col)
            .having(sa.func.count() > 1)
            .order_by(col)
            .limit(20)
        )
        shared += [f"{column} {r[0]!r}" for r in rows]
    if shared:
        raise RuntimeError(
            "cannot downgrade below 0006: some ids are registered in more than one account "
            f"({', '.join(shared)}); deregister one of each pair first"
        )
    for column, (per_account, global_) in INDEXES.items():
        op.create_index(global_, "devices", [column], unique=True)
        op.drop_index(per_account, table_name="devices")
