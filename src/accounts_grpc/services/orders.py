"""Use cases for the orders of EXTERNAL users, and the rules of an order's status.

- Orders belong to EXTERNAL users (others: FAILED_PRECONDITION ``USER_NOT_EXTERNAL``);
  ``order_id`` is unique inside the account (another user's: ALREADY_EXISTS
  ``ORDER_ID_TAKEN``). Writing one is an act on the user (USER_MANAGE), listing them is
  reading it (USER_READ), both through ``user_access.target``.
- Status only moves forward, RECEIVED < PROCESSING < SHIPPED < DELIVERED (skipping is
  fine); CANCELLED is reachable from any open status; DELIVERED and CANCELLED are final
  (any change: FAILED_PRECONDITION ``ORDER_CLOSED``; repeating the same state is a
  no-op). SHIPPED and DELIVERED need ``device_id`` and an http(s) ``tracking_link``.
- An upsert that leaves ``device_id`` / ``tracking_link`` empty keeps the stored values.
  A ``device_id`` the order is set to must be a device of the user's account
  (INVALID_ARGUMENT ``DEVICE_NOT_FOUND``).
- Audit: ``order.create|update``. An order re-sent unchanged writes nothing and records
  nothing.

The statements are ``uow.orders``' (store/orders.py) and ``uow.devices``'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from accounts_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)
from accounts_grpc.domain.listing import Page, parse_list_request
from accounts_grpc.domain.policy import Action
from accounts_grpc.domain.ports import UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.user_access import EXTERNAL, UserRef, check_user_ref, target, write
from accounts_grpc.services.writes import check_etag, conditional_update, new_row

RECEIVED, PROCESSING, SHIPPED, DELIVERED, CANCELLED = (
    "RECEIVED",
    "PROCESSING",
    "SHIPPED",
    "DELIVERED",
    "CANCELLED",
)
ORDER_STATUSES = (RECEIVED, PROCESSING, SHIPPED, DELIVERED, CANCELLED)
_STATUS_RANK = {RECEIVED: 1, PROCESSING: 2, SHIPPED: 3, DELIVERED: 4}
FINAL_STATUSES = frozenset({DELIVERED, CANCELLED})
NEEDS_SHIPPING = frozenset({SHIPPED, DELIVERED})
ORDER_OUTPUT_ONLY = frozenset({"id", "user_id", "create_time", "update_time"})

MAX_ORDER_ID = 200


@dataclass(frozen=True)
class OrderInput:
    order_id: str = ""
    status: str = ""  # one of ORDER_STATUSES, "" when unspecified
    device_id: str = ""
    tracking_link: str = ""
    etag: str = ""
    populated: tuple[str, ...] = ()


def check_order_transition(current: str | None, new: str, *, changed: bool) -> None:
    """FAILED_PRECONDITION unless an order may go from ``current`` to ``new``."""
    if current is None:
        return
    if current in FINAL_STATUSES:
        if changed:
            raise FailedPrecondition(
                f"the order is {current} and can no longer change",
                reason="ORDER_CLOSED",
                metadata={"status": current},
            )
        return
    if new == CANCELLED:
        return
    if _STATUS_RANK[new] < _STATUS_RANK[current]:
        raise FailedPrecondition(
            f"an order's status never moves backwards: it is {current}, not {new}",
            reason="ORDER_STATUS_BACKWARDS",
            metadata={"status": current, "requested_status": new},
        )


def check_shipping(status: str, device_id: str, tracking_link: str) -> None:
    """SHIPPED (and DELIVERED) orders name the device sent and a link to track it."""
    if status not in NEEDS_SHIPPING:
        return
    bad = []
    if not device_id:
        bad.append(FieldViolation("order.device_id", f"is required once the order is {status}"))
    if not tracking_link:
        bad.append(FieldViolation("order.tracking_link", f"is required once the order is {status}"))
    if bad:
        raise InvalidArgument(
            f"a {status} order needs a device_id and a tracking_link",
            bad,
            reason="SHIPPING_DETAILS_REQUIRED",
        )


class OrdersService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def upsert_user_order(self, p: Principal, ref: UserRef, o: OrderInput) -> Any:
        check_user_ref(ref)
        v = Validator()
        order_id = v.name("order.order_id", o.order_id, max_len=MAX_ORDER_ID)
        if o.status not in ORDER_STATUSES:
            v.add(
                "order.status",
                f"must be one of {', '.join('ORDER_STATUS_' + x for x in ORDER_STATUSES)}",
            )
        v.device_id("order.device_id", o.device_id, required=False)
        link = v.url("order.tracking_link", o.tracking_link)
        for f in sorted(set(o.populated) & ORDER_OUTPUT_ONLY):
            v.add(f"order.{f}", "is output-only and cannot be set")
        v.raise_if_any()

        def tx(uow: UnitOfWork) -> Any:
            r = target(uow.authority, p, ref, Action.USER_MANAGE)
            user = r.row
            if user.kind != EXTERNAL:
                raise FailedPrecondition(
                    f"orders are for EXTERNAL users; this user is {user.kind}",
                    reason="USER_NOT_EXTERNAL",
                    metadata={"kind": user.kind},
                )
            cur = uow.orders.by_order_id(user.account_id, order_id)
            if cur is not None and cur.user_id != user.id:
                raise AlreadyExists(
                    f"order_id {order_id!r} is another user's order in this account",
                    reason="ORDER_ID_TAKEN",
                    metadata={"order_id": order_id},
                )
            if cur is None and o.etag:
                raise Aborted(
                    f"order {order_id!r} does not exist, so no etag can match",
                    reason="ETAG_MISMATCH",
                )
            if cur is not None:
                check_etag(o.etag, cur.etag, "order")
            device_id = o.device_id or (cur.device_id if cur is not None else "") or ""
            tracking = link or (cur.tracking_link if cur is not None else "") or ""
            new = {"status": o.status, "device_id": device_id, "tracking_link": tracking}
            if cur is None:
                changed = ["order_id"] + [k for k, val in new.items() if val]
            else:
                old = {k: (getattr(cur, k) or "") for k in new}
                changed = [k for k in new if new[k] != old[k]]
            check_order_transition(
                cur.status if cur is not None else None, o.status, changed=bool(changed)
            )
            check_shipping(o.status, device_id, tracking)
            # a device_id the order is set to must be a device of the user's account (of that
            # account only: another tenant's device is as unknown as an unregistered id); a
            # kept or re-sent one is not checked again
            if "device_id" in changed and not uow.devices.in_account(
                user.account_id, [device_id], []
            ):
                raise InvalidArgument.field(
                    "order.device_id", "is not a device of this account", reason="DEVICE_NOT_FOUND"
                )
            if cur is not None and not changed:
                return cur
            values = {k: (val or None) for k, val in new.items()}
            if cur is None:
                row = new_row(
                    account_id=user.account_id, user_id=user.id, order_id=order_id, **values
                )
                pk = row["id"]
                uow.orders.insert(row)
                action = "order.create"
            else:
                pk = cur.id
                conditional_update(
                    uow.orders.update_if_etag, pk, cur.etag, {k: values[k] for k in changed},
                    "order",
                )
                action = "order.update"
            uow.audit.record(
                account_id=user.account_id,
                actor_user_id=p.user_id,
                action=action,
                resource_type="Order",
                resource_id=pk,
                changed_fields=changed,
            )
            return uow.orders.by_pk(pk)

        return write(self.deps.db, tx)

    def list_user_orders(
        self,
        p: Principal,
        ref: UserRef,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
    ) -> Page:
        check_user_ref(ref)
        with self.deps.db.read() as uow:
            q = parse_list_request(
                uow.orders.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                order_by=order_by,
                scope=ref.list_scope(),
            )
            r = target(uow.authority, p, ref, Action.USER_READ)
            return uow.orders.list_for_user(r.row.id, q)
