"""Sort rows in bounded memory: sorted runs spilled to disk, then a k-way merge.

    sorter = ExternalSort(directory, key_types=(str, int, int), types=(A, B))
    sorter.add((key, ts, seq, item))      # spills a sorted run when the buffer is full
    for key, ts, seq, item in sorter.merged():
        ...                               # ascending rows, items decoded again

A row is a sort key (a tuple of ints and strings, `key_types`) followed by the item. The key
must be unique (end it with the input position): then items are never compared and the order
is total and deterministic. Items are instances of `types` (dataclasses, msgspec Structs,
dict), stored with msgspec's MessagePack encoder: cheaper to decode again than the JSON input
(measured: ~2.5 us per event both ways, against 6.4 us for `events.decode`). A run is a file
of length-prefixed blocks, each one MessagePack array of rows [*key, item, type index], so
reading it costs one decode call per block plus one per item. When there are more runs than
`fan_in`, groups of them are first merged into longer runs without decoding the items
(msgspec.Raw), so the final merge never holds more than `fan_in` files open.

Nothing is written while everything fits in one buffer: `merged()` then sorts it in memory.
"""

from __future__ import annotations

import heapq
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

_LENGTH = struct.Struct("<I")
_BLOCK_ROWS = 1024  # rows per block: large enough to amortise a decode call, small to buffer
_IO_BUFFER = 1 << 16

Row = tuple[Any, ...]  # (*key, item); stored as (*key, item, type index)


class ExternalSort:
    """Collects rows, hands them back sorted; see the module doc."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        key_types: Sequence[type],
        types: Sequence[type],
        run_records: int | None = 100_000,
        fan_in: int = 64,
        runs: Sequence[Path] = (),
        name: str = "run",
    ) -> None:
        """No `directory` (or no `run_records`): everything stays in memory. `runs`: sorted
        runs written by other sorters (`flush`) of the same types, to merge with these rows;
        `name` prefixes the run files (sorters in other processes share the directory)."""
        if (run_records is not None and run_records < 1) or fan_in < 2:
            raise ValueError("run_records must be >= 1 and fan_in >= 2")
        self.directory = Path(directory) if directory is not None else None
        self.run_records = (run_records or sys.maxsize) if directory is not None else sys.maxsize
        self.fan_in = fan_in
        self.types = tuple(types)
        self._width = len(key_types)
        self._index = {t: i for i, t in enumerate(self.types)}
        self._decoders = [msgspec.msgpack.Decoder(t).decode for t in self.types]
        self._encode = msgspec.msgpack.Encoder().encode
        stored = tuple[(*key_types, msgspec.Raw, int)]  # type: ignore[misc]
        self._decode_block = msgspec.msgpack.Decoder(list[stored]).decode  # type: ignore[valid-type]
        self.buffer: list[Row] = []
        self.runs: list[Path] = list(runs)
        self.name = name
        self.count = 0  # rows added
        self.spilled = 0  # rows written to runs (intermediate merges not counted)
        self._made = 0  # run files created, for their names

    def add(self, row: Row) -> None:
        buffer = self.buffer
        buffer.append(row)
        self.count += 1
        if len(buffer) >= self.run_records:
            self._spill()

    def extend(self, rows: list[Row]) -> None:
        """add() for each row, without a call per row."""
        self.count += len(rows)
        room = self.run_records - len(self.buffer)
        while len(rows) >= room:
            self.buffer.extend(rows[:room])
            rows = rows[room:]
            self._spill()
            room = self.run_records
        self.buffer.extend(rows)

    def _new_run(self) -> Path:
        assert self.directory is not None
        self._made += 1
        return self.directory / f"{self.name}-{self._made:06d}.bin"

    def _write(self, path: Path, rows: Iterator[Row]) -> None:
        encode = self._encode
        pack = _LENGTH.pack
        with open(path, "wb", buffering=_IO_BUFFER) as out:
            block: list[Row] = []
            for row in rows:
                block.append(row)
                if len(block) == _BLOCK_ROWS:
                    data = encode(block)
                    out.write(pack(len(data)))
                    out.write(data)
                    block.clear()
            if block:
                data = encode(block)
                out.write(pack(len(data)))
                out.write(data)

    def _spill(self) -> None:
        buffer = self.buffer
        buffer.sort()  # keys are unique: items are never compared
        index = self._index
        path = self._new_run()
        self._write(path, ((*row, index[type(row[-1])]) for row in buffer))
        self.runs.append(path)
        self.spilled += len(buffer)
        self.buffer = []

    def _stored(self, path: Path) -> Iterator[Row]:
        """The rows of a run as stored: (*key, encoded item, type index)."""
        decode = self._decode_block
        size = _LENGTH.size
        unpack = _LENGTH.unpack
        with open(path, "rb", buffering=_IO_BUFFER) as run:
            while header := run.read(size):
                (length,) = unpack(header)
                yield from decode(run.read(length))
        path.unlink()

    def flush(self) -> list[Path]:
        """Write what is buffered and hand over the runs (for another sorter to merge)."""
        if self.buffer:
            self._spill()
        runs, self.runs = self.runs, []
        return runs

    def merged(self) -> Iterator[Row]:
        """All rows in order; consumes the sorter (runs are deleted as they are read)."""
        if not self.runs:
            buffer, self.buffer = self.buffer, []
            buffer.sort()
            yield from buffer
            return
        if self.buffer:
            self._spill()
        while len(self.runs) > self.fan_in:
            group, self.runs = self.runs[: self.fan_in], self.runs[self.fan_in :]
            path = self._new_run()
            self._write(path, heapq.merge(*(self._stored(p) for p in group)))
            self.runs.append(path)
        runs, self.runs = self.runs, []
        decoders = self._decoders
        width = self._width
        for row in heapq.merge(*(self._stored(p) for p in runs)):
            yield (*row[:width], decoders[row[-1]](row[width]))

    def close(self) -> None:
        """Delete the runs not read; the directory is the caller's."""
        for path in self.runs:
            path.unlink(missing_ok=True)
        self.runs = []
        self.buffer = []
