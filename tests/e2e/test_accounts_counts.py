"""ListAccounts' total_size on a real server: an admin's unfiltered list reads the count
the database keeps (migration 0007), and it is exact, with and without show_closed,
before and after CreateAccount and CloseAccount; filtered lists still count exactly."""

from __future__ import annotations

import sqlalchemy as sa

from accounts_grpc.store.tables import accounts
from tests.e2e.accounts_helpers import new_account, pb, uniq
from tests.support import Server


def truth(server: Server) -> tuple[int, int]:
    """(every account, the open ones), counted in the database."""
    with server.app.db.read() as uow:
        every = uow.conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one()
        open_ = uow.conn.execute(sa.select(sa.func.count()).select_from(accounts)
                             .where(accounts.c.closed == sa.false())).scalar_one()
        assert uow.accounts.kept_counts() == (every, open_)
    return int(every), int(open_)


def sizes(server: Server, **kw: object) -> tuple[int, int]:
    """total_size of the admin's first page (of one account), with and without closed."""
    def size(show_closed: bool) -> int:
        req = pb.ListAccountsRequest(page_size=1, show_closed=show_closed, **kw)  # type: ignore[arg-type]
        return int(server.stubs.accounts.ListAccounts(req, metadata=server.admin).total_size)

    return size(True), size(False)


def test_admin_total_size_is_exact_as_accounts_come_and_close(server: Server) -> None:
    before = truth(server)
    assert sizes(server) == before
    tag = uniq("counted")
    made = [new_account(server, name=f"{tag} {i}").account for i in range(3)]
    assert truth(server) == (before[0] + 3, before[1] + 3)
    assert sizes(server) == truth(server)
    assert sizes(server, filter=tag) == (3, 3)

    server.stubs.accounts.CloseAccount(pb.CloseAccountRequest(id=made[0].id),
                                       metadata=server.admin)
    assert truth(server) == (before[0] + 3, before[1] + 2)
    assert sizes(server) == truth(server)
    assert sizes(server, filter=tag) == (3, 2)

    # the next page carries the first page's total
    first = server.stubs.accounts.ListAccounts(pb.ListAccountsRequest(page_size=1),
                                               metadata=server.admin)
    nxt = server.stubs.accounts.ListAccounts(
        pb.ListAccountsRequest(page_size=1, page_token=first.next_page_token),
        metadata=server.admin)
    assert first.total_size == nxt.total_size == truth(server)[1]
