"""The change feed's fan-out: one poller per process, whatever the number of open streams.

A ``WatchEvents`` stream ``subscribe``s, then catches up from the database on its own
(services/events.py), then takes what the poller hands it. The poller runs only while a
subscription is open: every ``feed_poll_interval`` seconds it reads the events committed
past the last position it saw (``uow.audit.after``; positions increase in commit order,
store/audit.py) and appends them to every subscription's queue.

The position the poller starts from is read in ``subscribe`` itself, before the caller
catches up, so what the caller's catch-up does not read yet the poller delivers: the
stream skips anything at or below the last position it sent, so none is repeated. A
subscription whose queue grows past ``MAX_QUEUED`` (a stream that does not keep up) is
emptied and marked ``lagging``: its stream catches up from the database again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from accounts_grpc.domain.ports import Database

log = logging.getLogger(__name__)

#: events read per statement, by the poller and by a catch-up
BATCH = 500
#: events a subscription holds before it is told to catch up from the database instead
MAX_QUEUED = 10_000


class Subscription:
    """One stream's place in the hub: the events the poller handed it, in feed order."""

    def __init__(self, hub: FeedHub) -> None:
        self._hub = hub
        self._events: list[Any] = []
        self.lagging = False
        self.closed = False

    def take(self, timeout: float) -> list[Any]:
        """The events queued (waiting up to ``timeout`` seconds for one); empty if none
        came, or if the hub closed (``closed``) or the queue overflowed (``lagging``)."""
        with self._hub.cond:
            if not self._events and not self.closed and not self.lagging:
                self._hub.cond.wait(timeout)
            events, self._events = self._events, []
            return events

    def caught_up(self) -> None:
        """The stream has read the database again after ``lagging``."""
        with self._hub.cond:
            self.lagging = False

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def _offer(self, events: list[Any]) -> None:  # the hub's lock is held
        if self.lagging:
            return
        if len(self._events) + len(events) > MAX_QUEUED:
            self._events = []
            self.lagging = True
        else:
            self._events.extend(events)


class FeedHub:
    """The poller and its subscriptions (see the module docstring)."""

    def __init__(self, db: Database, interval: float) -> None:
        self._db = db
        self._interval = interval
        self.cond = threading.Condition()
        self._subs: set[Subscription] = set()
        self._position = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def subscribe(self) -> Subscription:
        """A new subscription; it gets every event committed after this call returns
        (at least), so the caller catches up from the database after it."""
        sub = Subscription(self)
        with self.cond:
            if self._closed:
                sub.closed = True
                return sub
            if self._thread is None:
                with self._db.read() as uow:
                    self._position = uow.audit.newest_position()
                self._thread = threading.Thread(target=self._poll, name="feed-poller",
                                                daemon=True)
                self._thread.start()
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self.cond:
            self._subs.discard(sub)
            sub.closed = True

    def close(self) -> None:
        """The server is draining: every subscription ends, and no new one opens."""
        with self.cond:
            self._closed = True
            for sub in self._subs:
                sub.closed = True
            self._subs.clear()
            self.cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5)

    def _poll(self) -> None:
        while True:
            with self.cond:
                if not self._subs:  # the last stream ended: stop until the next one
                    self._thread = None
                    return
                self.cond.wait_for(lambda: self._closed, self._interval)
                if self._closed:
                    self._thread = None
                    return
                position = self._position
            try:
                events = self._read(position)
            except Exception:  # the database is down: the streams wait, the poller retries
                log.warning("the change feed could not read new events", exc_info=True)
                continue
            if events:
                with self.cond:
                    self._position = events[-1].seq
                    for sub in self._subs:
                        sub._offer(events)
                    self.cond.notify_all()

    def _read(self, position: int) -> list[Any]:
        events: list[Any] = []
        with self._db.read() as uow:
            while True:
                batch = uow.audit.after(position, limit=BATCH)
                events.extend(batch)
                if len(batch) < BATCH:
                    return events
                position = batch[-1].seq
