"""Device orders of EXTERNAL users: upsert by order_id, forward-only status, listing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from accounts.v1 import user_pb2
from accounts.v1 import user_service_pb2 as us

from tests.e2e.users_helpers import (
    EXTERNAL,
    World,
    build_world,
    new_user,
    ref,
    register_devices,
    session_token,
    uniq,
)
from tests.support import Server, bearer, expect_error

C = grpc.StatusCode
S = user_pb2
LINK = "https://track.example.com/p/1"


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    return build_world(server)


def _up(w: World, user: str, md: object = None, **order: object) -> user_pb2.Order:
    return w.server.stubs.users.UpsertUserOrder(
        us.UpsertUserOrderRequest(user=ref(user), order=user_pb2.Order(**order)),
        metadata=md or w.server.admin,
    ).order


def test_lifecycle_and_upsert_semantics(world: World) -> None:
    x = new_user(world.server, world.inter, EXTERNAL).user
    [dev] = register_devices(world.server, world.inter, 1)  # orders name devices of the account
    oid = uniq("o-")
    o1 = _up(world, x.id, order_id=oid, status=S.ORDER_STATUS_RECEIVED)
    assert (o1.user_id, o1.order_id, o1.status) == (x.id, oid, S.ORDER_STATUS_RECEIVED)
    assert o1.id and o1.etag and o1.device_id == "" and o1.tracking_link == ""
    # the same state again is a no-op
    same = _up(world, x.id, order_id=oid, status=S.ORDER_STATUS_RECEIVED)
    assert same.etag == o1.etag
    # skipping a status is fine; the etag guards the update
    o2 = _up(
        world,
        x.id,
        order_id=oid,
        status=S.ORDER_STATUS_SHIPPED,
        device_id=dev.device_id,
        tracking_link=LINK,
        etag=o1.etag,
    )
    assert o2.id == o1.id and o2.etag != o1.etag and o2.device_id == dev.device_id
    # DELIVERED keeps the shipping details when they are not sent again
    o3 = _up(world, x.id, order_id=oid, status=S.ORDER_STATUS_DELIVERED)
    assert (o3.device_id, o3.tracking_link) == (dev.device_id, LINK)
    # final: repeating is fine, changing is not
    assert _up(world, x.id, order_id=oid, status=S.ORDER_STATUS_DELIVERED).etag == o3.etag
    expect_error(
        _up,
        world,
        x.id,
        order_id=oid,
        status=S.ORDER_STATUS_CANCELLED,
        code=C.FAILED_PRECONDITION,
        reason="ORDER_CLOSED",
    )


def test_cancel_from_any_open_status(world: World) -> None:
    x = new_user(world.server, world.inter, EXTERNAL).user
    for start in (S.ORDER_STATUS_RECEIVED, S.ORDER_STATUS_PROCESSING):
        oid = uniq("o-")
        _up(world, x.id, order_id=oid, status=start)
        assert (
            _up(world, x.id, order_id=oid, status=S.ORDER_STATUS_CANCELLED).status
            == S.ORDER_STATUS_CANCELLED
        )


def test_list_orders(world: World) -> None:
    bot = world["intermediary-machine"]
    x = new_user(world.server, world.inter, EXTERNAL, md=bot.md).user
    y = new_user(world.server, world.inter, EXTERNAL, md=bot.md).user
    [dev] = register_devices(world.server, world.inter, 1)
    ids = [uniq("ord-") for _ in range(3)]
    for oid in ids:
        _up(world, x.id, bot.md, order_id=oid, status=S.ORDER_STATUS_RECEIVED)
    _up(world, y.id, bot.md, order_id=uniq("ord-"), status=S.ORDER_STATUS_RECEIVED)
    _up(
        world,
        x.id,
        bot.md,
        order_id=ids[1],
        status=S.ORDER_STATUS_SHIPPED,
        device_id=dev.device_id,
        tracking_link=LINK,
    )
    users = world.server.stubs.users

    def listed(md: object = None, **kw: object) -> us.ListUserOrdersResponse:
        return users.ListUserOrders(
            us.ListUserOrdersRequest(
                user=ref(external_id=x.external_id, account_id=world.inter)
                if md is None
                else ref(x.id),
                **kw,
            ),
            metadata=md or world.server.admin,
        )

    assert [o.order_id for o in listed().orders] == ids
    assert [o.order_id for o in listed(order_by="create_time desc").orders] == ids[::-1]
    assert [o.order_id for o in listed(order_by="order_id").orders] == sorted(ids)
    assert [o.order_id for o in listed(filter=dev.device_id.lower()).orders] == [ids[1]]
    p1 = listed(page_size=2)
    p2 = listed(page_size=2, page_token=p1.next_page_token)
    assert [o.order_id for o in [*p1.orders, *p2.orders]] == ids and p2.next_page_token == ""
    assert p1.total_size == 3
    # the end user sees its own orders with its session
    x_md = bearer(session_token(world.server, x.id))
    assert [o.order_id for o in listed(x_md).orders] == ids
    expect_error(listed, order_by="status", code=C.INVALID_ARGUMENT, reason="INVALID_ORDER_BY")


def test_concurrent_upserts_of_a_new_order_make_one_order(world: World) -> None:
    x = new_user(world.server, world.inter, EXTERNAL).user
    oid = uniq("race-")

    def up(_: int) -> str:
        return _up(world, x.id, order_id=oid, status=S.ORDER_STATUS_RECEIVED).id

    with ThreadPoolExecutor(8) as ex:
        ids = set(ex.map(up, range(8)))
    assert len(ids) == 1
    listed = world.server.stubs.users.ListUserOrders(
        us.ListUserOrdersRequest(user=ref(x.id)), metadata=world.server.admin
    )
    assert [o.order_id for o in listed.orders] == [oid]
