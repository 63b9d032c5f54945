"""Faust's `kafka://` transport with a fix for a stale batch after a seek. No rules here.

At the end of every recovery (a worker starting or rebalancing), Faust resumes the stream
partitions and then seeks them back to their committed offsets (`Consumer.perform_seek`,
which also resets the consumer's "read offsets" to them). Records fetched before the seek
can still be in the batch the drain loop (`Consumer._drain_messages`) is iterating, or in a
callback that was waiting on Faust's flow control. The drain loop goes on with them and
records their offsets as read; the records fetched again from the committed offset are then
"older than read" and dropped, never acknowledged, so that partition's committed offset
stops for good and its events are not processed until the worker restarts. Seen with stock
faust-streaming 0.15.3 in tests/test_recovery.py: a worker SIGKILLed while detect lags,
restarted, never moved an internal-topic partition past its committed offset.

`Consumer.getmany` below, the drain loop's source of records, notices a seek that completed
since it last yielded: it drops the rest of the stale batch and puts the read offsets back to
where the seek left them, so the records from the committed offset on are read again
(at-least-once; the core ignores redelivered events).

`Transport` is installed by `streams.app` through `App._new_transport`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class Consumer(faust_aiokafka.Consumer):
    _seek_epoch: int = 0  # seeks completed
    _drain_epoch: int = 0  # seeks the drain loop has accounted for
    _seek_offsets: dict[Any, int | None] | None = None  # read offsets the last seek set

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._seek_offsets = {tp: self._read_offset[tp] for tp in self.assignment()}
        self._seek_epoch += 1

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        self._after_seek()
        async for tp, message in super().getmany(timeout):
            if self._after_seek():
                return  # the rest of this batch was fetched before the seek
            yield tp, message

    def _after_seek(self) -> bool:
        """After a seek the drain loop has not seen yet: undo the read offsets it recorded
        since (from stale records) and say so."""
        if self._drain_epoch == self._seek_epoch:
            return False
        self._drain_epoch = self._seek_epoch
        if self._seek_offsets:
            self._read_offset.update(self._seek_offsets)
        return True


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
