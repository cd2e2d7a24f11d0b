"""Async event bus: every mutation the graph applies is published to each
subscriber, in order. A subscriber's queue is bounded; a full queue makes
`publish` wait (backpressure), it never drops an event.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    def __init__(self, bus: EventBus[T], maxsize: int) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[T] = asyncio.Queue(maxsize)

    async def get(self) -> T:
        return await self.queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus(Generic[T]):
    def __init__(self) -> None:
        self._subs: list[Subscription[T]] = []

    def subscribe(self, maxsize: int = 10_000) -> Subscription[T]:
        sub: Subscription[T] = Subscription(self, maxsize)
        self._subs.append(sub)
        return sub

    def __len__(self) -> int:
        """How many subscribers there are."""
        return len(self._subs)

    def unsubscribe(self, sub: Subscription[T]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    async def publish(self, event: T) -> None:
        for sub in list(self._subs):
            await sub.queue.put(event)
