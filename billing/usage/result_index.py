"""The results a fetch has kept, as digests, in bounded memory: packed into small byte strings in
memory, and beyond a bound appended to a private temporary file.

A key digest and its values digest make a 24-byte record. The records live in
2**PARTITION_BITS byte strings, the partition given by the key digest's first bits, so finding a
key is one substring search in a few hundred bytes, and a page of keys is looked up and stored
with a few calls that loop in C. When `spill_after` keys are in memory, the byte strings are
appended to the file as they are (one sequential write, nothing sorted) with where each one
starts, and memory starts again empty. A filter of one bit per spilled key's digest bits sends
only a few of the later keys to the file.
"""

from __future__ import annotations

import io
import struct
import sys
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate
from operator import add
from pathlib import Path
from typing import Literal

ResultKind = Literal["new", "duplicate", "conflicting"]

KEY_BYTES = 16
VALUE_BYTES = 8
RECORD_BYTES = KEY_BYTES + VALUE_BYTES
UNSIGNED_64 = (1 << 64) - 1
# Records are spread over 2**PARTITION_BITS byte strings by the first bits of their key digest.
PARTITION_BITS = 14
PARTITIONS = 1 << PARTITION_BITS
# Keys held in memory before they move to the file: 24 bytes each plus about 40 per partition,
# so at most about 7 MiB, whatever the usage (a close of 1,000 orgs, about 220,000 results,
# never spills).
SPILL_AFTER = 1 << 18
# One bit per spilled key, at a position taken from its digest's second 32-bit word (the
# partition takes the first): a key whose bit is clear was never spilled, so most new keys skip
# the file. 2**23 bits is 1 MiB whatever the usage; at a million spilled keys about one new key
# in nine still reads the file for nothing.
FILTER_BITS_LOG2 = 23

_EMPTY = b""


class ResultIndex:
    """key digest (16 bytes) -> digest of the values (an unsigned 64-bit integer), for one fetch.

    A fetch of a million results would hold about 130 MiB of Python objects in a plain dict;
    here at most `spill_after` keys (24 bytes each) are in memory and the rest sit in a
    temporary file (deleted when the index is closed), so memory stays flat however many orgs
    and results a period has.
    """

    def __init__(self, spill_after: int | None = None) -> None:
        self._spill_after = spill_after or SPILL_AFTER
        self._parts: list[bytes] = [_EMPTY] * PARTITIONS
        self._in_memory = 0
        # Per spill: where it starts in the file, and where each partition's records start in
        # it (PARTITIONS + 1 offsets).
        self._runs: list[tuple[int, array[int]]] = []
        self._file: io.BufferedRandom | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._spilled_bits = bytearray()
        self.spilled = 0

    def classify(self, key_digest: bytes, values_digest: int) -> ResultKind:
        """ "new" the first time a key is seen (it is remembered), "duplicate" for an identical
        replay, "conflicting" when the key comes back with other values."""
        if len(key_digest) != KEY_BYTES:
            raise ValueError(f"classify: a key digest is {KEY_BYTES} bytes")
        record = key_digest + values_digest.to_bytes(VALUE_BYTES, "little")
        partition = _partition(key_digest)
        suspects = [0] if self._spilled_bits and self._maybe_spilled(key_digest) else []
        [kind] = self._classify_each([record], [partition], suspects)
        if self._in_memory >= self._spill_after:
            self._spill()
        return kind

    def classify_page(
        self, key_digests: Sequence[bytes], values_digests: Sequence[int]
    ) -> list[ResultKind]:
        """`classify` for each key digest and values digest of a page, in order; the spill waits
        for the page's end.

        The usual page, of keys never seen and each there once, is looked up and stored in a few
        calls that loop in C; any other is classified key by key."""
        count = len(key_digests)
        if count != len(values_digests):
            raise ValueError("classify_page: as many values digests as key digests are needed")
        if not count:
            return []
        keys = b"".join(key_digests)
        if len(keys) != count * KEY_BYTES:
            raise ValueError(f"classify_page: a key digest is {KEY_BYTES} bytes")
        shift = 16 - PARTITION_BITS
        partitions = [half >> shift for half in memoryview(keys).cast("H")[:: KEY_BYTES // 2]]
        values = struct.pack(f"<{count}Q", *values_digests)
        records = list(
            map(
                add,
                key_digests,
                [values[at : at + VALUE_BYTES] for at in range(0, len(values), VALUE_BYTES)],
            )
        )
        parts = self._parts
        suspects = self._maybe_spilled(keys) if self._spilled_bits else []
        found = list(map(bytes.find, map(parts.__getitem__, partitions), key_digests))
        if not suspects and found.count(-1) == count and len(set(key_digests)) == count:
            for partition, record in zip(partitions, records, strict=True):
                parts[partition] += record
            self._in_memory += count
            kinds: list[ResultKind] = ["new"] * count
        else:
            kinds = self._classify_each(records, partitions, suspects)
        if self._in_memory >= self._spill_after:
            self._spill()
        return kinds

    @property
    def disk_folder(self) -> Path | None:
        """Where the spilled digests are, once there are any."""
        return Path(self._folder.name) if self._folder is not None else None

    def __len__(self) -> int:
        return self._in_memory + self.spilled

    def close(self) -> None:
        """Drop the temporary file (the index can no longer be used)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._runs = []
        self._spilled_bits = bytearray()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
        self._parts = [_EMPTY] * PARTITIONS
        self._in_memory = 0

    def _classify_each(
        self, records: list[bytes], partitions: list[int], suspects: list[int]
    ) -> list[ResultKind]:
        """Key by key, in order (a key may come twice in the page), with the spilled keys among
        the suspects read from the file first."""
        on_disk = self._on_disk((records[at][:KEY_BYTES], partitions[at]) for at in suspects)
        parts = self._parts
        kinds: list[ResultKind] = []
        for record, partition in zip(records, partitions, strict=True):
            key = record[:KEY_BYTES]
            known = _stored_value(parts[partition], key)
            if known is None:
                known = on_disk.get(key)
            if known is None:
                parts[partition] += record
                self._in_memory += 1
                kinds.append("new")
            else:
                kinds.append("duplicate" if known == record[KEY_BYTES:] else "conflicting")
        return kinds

    def _maybe_spilled(self, keys: bytes) -> list[int]:
        """The positions of the keys (digests end to end) whose filter bit is set: the only
        ones that may have been spilled."""
        bits = self._spilled_bits
        shift = 32 - FILTER_BITS_LOG2
        words = memoryview(keys).cast("I")[1 :: KEY_BYTES // 4].tolist()
        return [
            at
            for at, word in enumerate(words)
            if bits[word >> (shift + 3)] >> ((word >> shift) & 7) & 1
        ]

    def _on_disk(self, keys: Iterable[tuple[bytes, int]]) -> dict[bytes, bytes]:
        """The values digests in the file of those of `keys` (with their partitions) that were
        spilled."""
        found: dict[bytes, bytes] = {}
        if self._file is None:
            return found
        file = self._file
        for key, partition in keys:
            for base, offsets in self._runs:
                start, end = offsets[partition], offsets[partition + 1]
                if start == end:
                    continue
                file.seek(base + start)
                value = _stored_value(file.read(end - start), key)
                if value is not None:
                    found[key] = value
                    break
        return found

    def _spill(self) -> None:
        file = self._file or self._open_file()
        parts = self._parts
        size = self._in_memory * RECORD_BYTES
        offsets = array("I" if size < 1 << 32 else "Q", accumulate(map(len, parts), initial=0))
        self._runs.append((file.seek(0, io.SEEK_END), offsets))
        file.writelines(parts)
        file.flush()
        if not self._spilled_bits:
            self._spilled_bits = bytearray(1 << (FILTER_BITS_LOG2 - 3))
        bits = self._spilled_bits
        shift = 32 - FILTER_BITS_LOG2
        for part in parts:
            if part:
                for word in memoryview(part).cast("I")[1 :: RECORD_BYTES // 4].tolist():
                    bits[word >> (shift + 3)] |= 1 << ((word >> shift) & 7)
        self.spilled += self._in_memory
        self._parts = [_EMPTY] * PARTITIONS
        self._in_memory = 0

    def _open_file(self) -> io.BufferedRandom:
        self._folder = tempfile.TemporaryDirectory(prefix="billing-fetch-index-")
        self._file = (Path(self._folder.name) / "seen.bin").open("w+b")
        return self._file


def _partition(key_digest: bytes) -> int:
    """The partition of a key: the top bits of its digest's first 16-bit word (read as
    `classify_page` reads it, in the machine's byte order)."""
    return int.from_bytes(key_digest[:2], sys.byteorder) >> (16 - PARTITION_BITS)


def _stored_value(records: bytes, key: bytes) -> bytes | None:
    """The values digest stored with `key` in a run of records, or None: only a match at a
    record's start counts (16 bytes across two records are not a key)."""
    at = records.find(key)
    while at != -1:
        if at % RECORD_BYTES == 0:
            return records[at + KEY_BYTES : at + RECORD_BYTES]
        at = records.find(key, at + 1)
    return None
