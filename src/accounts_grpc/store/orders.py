"""Repository for the orders of (EXTERNAL) users (``uow.orders``).

No rules here (who may write an order, how its status moves, what it needs once
shipped: services/orders.py), only the statements: ``by_order_id`` (an account's order
by the client's ``order_id``), ``by_pk``, ``insert``, ``update_if_etag`` (an order's
etag-conditional UPDATE); ``list_for_user`` reads one page of ``ORDER_LIST``.

Point reads are module constants with bind parameters, built and compiled once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.store import conflicts
from accounts_grpc.store.listing import ListSpec, run_list
from accounts_grpc.store.rows import Repository
from accounts_grpc.store.tables import orders

__all__ = ["ORDER_LIST", "Orders"]

_BY_ORDER_ID = sa.select(orders).where(
    orders.c.account_id == sa.bindparam("aid"), orders.c.order_id == sa.bindparam("oid")
)
_BY_PK = sa.select(orders).where(orders.c.id == sa.bindparam("pk"))
_INSERT = orders.insert()
_EVERY_ORDER = sa.select(orders)

#: ListUserOrders: ordered by its times or order id; searched in ids and tracking links.
ORDER_LIST = ListSpec(
    resource="orders",
    id_column=orders.c.id,
    orderable={
        "create_time": orders.c.create_time,
        "update_time": orders.c.update_time,
        "order_id": orders.c.order_id,
    },
    searchable=[
        orders.c.order_id,
        sa.func.coalesce(orders.c.device_id, ""),
        sa.func.coalesce(orders.c.tracking_link, ""),
    ],
)


class Orders(Repository):
    """The orders of every account (see the module docstring)."""

    __slots__ = ()

    #: what ListUserOrders may be ordered by and searched in
    list_shape = ORDER_LIST

    def by_order_id(self, account_id: str, order_id: str) -> sa.Row[Any] | None:
        """The account's order with this ``order_id`` (every column), or None."""
        return self.conn.execute(_BY_ORDER_ID, {"aid": account_id, "oid": order_id}).first()

    def by_pk(self, pk: str) -> sa.Row[Any] | None:
        """The order whose primary key is ``pk`` (every column), or None."""
        return self.conn.execute(_BY_PK, {"pk": pk}).first()

    def insert(self, values: Mapping[str, Any]) -> None:
        """Insert the order row (every column)."""
        self.conn.execute(_INSERT, dict(values))

    def update_if_etag(self, pk: str, old_etag: str, values: Mapping[str, Any]) -> bool:
        """Write ``values`` to the order ``pk`` if its etag is still ``old_etag``;
        False (nothing written) if a concurrent writer changed it first, or it is gone
        (store/conflicts.update_if_etag, run by services/writes.conditional_update)."""
        return conflicts.update_if_etag(self.conn, orders, pk, old_etag, values)

    def list_for_user(self, user_id: str, query: ListQuery) -> Page:
        """One page (``query``, parsed against ``ORDER_LIST``) of the user's orders."""
        base = _EVERY_ORDER.where(orders.c.user_id == user_id)
        return run_list(self.conn, ORDER_LIST, query, base)
