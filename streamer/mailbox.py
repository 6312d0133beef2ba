"""A latest-wins mailbox for asyncio tasks: a new item replaces an unconsumed one (counted)."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestWinsMailbox(Generic[T]):
    def __init__(self) -> None:
        self._item: T | None = None
        self._event = asyncio.Event()
        self._closed = False
        self.replaced = 0

    def put(self, item: T) -> None:
        if self._item is not None:
            self.replaced += 1
        self._item = item
        self._event.set()

    @property
    def pending(self) -> bool:
        """An item waits to be taken."""
        return self._item is not None

    def close(self) -> None:
        self._closed = True
        self._event.set()

    async def get(self) -> T | None:
        """The newest item; None once closed and empty."""
        while True:
            if self._item is not None:
                item, self._item = self._item, None
                self._event.clear()
                return item
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()
