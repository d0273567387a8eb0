"""The results a fetch has kept, as digests, in bounded memory: recent ones in a dict, the rest
spilled to a private temporary SQLite file."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

ResultKind = Literal["new", "duplicate", "conflicting"]

# Digests held in memory before they move to disk: about 1.2 MiB of dict, whatever the usage
# (a lookup costs the same in memory or on disk, measured: 300,000 results in 1.8-1.9 s).
SPILL_AFTER = 10_000
# SQLite's page cache for the spilled digests, in KiB.
DISK_CACHE_KIB = 4_096
KEY_BYTES = 16
# Keys looked up on disk per SQL statement (well under SQLite's limit on bound parameters).
LOOKUP_BATCH = 500
UNSIGNED_64 = (1 << 64) - 1
# One bit per spilled key, at the position its digest's first bits give: a key whose bit is
# clear was never spilled, so most new keys skip the disk. 2**23 bits is 1 MiB whatever the
# usage; at a million spilled keys about one new key in nine still looks on disk for nothing.
FILTER_BITS_LOG2 = 23


class ResultIndex:
    """key digest (16 bytes) -> digest of the values (8 bytes), for one fetch.

    A fetch of a million results would hold about 130 MiB of Python objects in a plain dict;
    here at most `spill_after` are in memory and the rest sit in a temporary SQLite file
    (deleted when the index is closed or collected), so memory stays flat however many orgs
    and results a period has.
    """

    def __init__(self, spill_after: int | None = None) -> None:
        self._spill_after = spill_after or SPILL_AFTER
        self._recent: dict[bytes, int] = {}
        self._disk: sqlite3.Connection | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._spilled_bits = bytearray()
        self.spilled = 0

    def classify(self, key_digest: bytes, values_digest: int) -> ResultKind:
        """ "new" the first time a key is seen (it is remembered), "duplicate" for an identical
        replay, "conflicting" when the key comes back with other values."""
        known = self._recent.get(key_digest)
        if known is None and self._disk is not None and self._maybe_spilled(key_digest):
            row = self._disk.execute(
                "SELECT value FROM seen WHERE key = ?", (key_digest,)
            ).fetchone()
            known = None if row is None else int(row[0]) % (1 << 64)
        if known is None:
            self._recent[key_digest] = values_digest
            if len(self._recent) >= self._spill_after:
                self._spill()
            return "new"
        return "duplicate" if known == values_digest else "conflicting"

    def classify_page(self, results: Sequence[tuple[bytes, int]]) -> list[ResultKind]:
        """`classify` for each (key digest, values digest) of a page, in order, with one disk
        lookup per batch of keys instead of one per key; the spill waits for the page's end."""
        recent = self._recent
        maybe_spilled = self._maybe_spilled
        on_disk = self._on_disk(
            key for key, _ in results if key not in recent and maybe_spilled(key)
        )
        kinds: list[ResultKind] = []
        for key_digest, values_digest in results:
            known = recent.get(key_digest)
            if known is None:
                known = on_disk.get(key_digest)
            if known is None:
                recent[key_digest] = values_digest
                kinds.append("new")
            else:
                kinds.append("duplicate" if known == values_digest else "conflicting")
        if len(recent) >= self._spill_after:
            self._spill()
        return kinds

    @property
    def disk_folder(self) -> Path | None:
        """Where the spilled digests are, once there are any."""
        return Path(self._folder.name) if self._folder is not None else None

    def __len__(self) -> int:
        return len(self._recent) + self.spilled

    def close(self) -> None:
        """Drop the temporary file (the index can no longer be used)."""
        if self._disk is not None:
            self._disk.close()
            self._disk = None
        self._spilled_bits = bytearray()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
        self._recent.clear()

    def _maybe_spilled(self, key_digest: bytes) -> bool:
        """False when the key was certainly never spilled (its filter bit is clear)."""
        if not self._spilled_bits:
            return False
        position = _filter_position(key_digest)
        return bool(self._spilled_bits[position >> 3] & (1 << (position & 7)))

    def _on_disk(self, keys: Iterable[bytes]) -> dict[bytes, int]:
        """The values digests stored on disk for those of `keys` that were spilled."""
        if self._disk is None:
            return {}
        wanted = list(dict.fromkeys(keys))
        found: dict[bytes, int] = {}
        for start in range(0, len(wanted), LOOKUP_BATCH):
            batch = wanted[start : start + LOOKUP_BATCH]
            rows = self._disk.execute(_lookup_statement(len(batch)), batch)
            found.update((key, int(value) & UNSIGNED_64) for key, value in rows)
        return found

    def _spill(self) -> None:
        disk = self._disk or self._open_disk()
        disk.execute("BEGIN")
        disk.executemany(
            "INSERT INTO seen (key, value) VALUES (?, ?)",
            sorted((key, _signed(value)) for key, value in self._recent.items()),
        )
        disk.execute("COMMIT")
        if not self._spilled_bits:
            self._spilled_bits = bytearray(1 << (FILTER_BITS_LOG2 - 3))
        bits = self._spilled_bits
        for key in self._recent:
            position = _filter_position(key)
            bits[position >> 3] |= 1 << (position & 7)
        self.spilled += len(self._recent)
        self._recent = {}

    def _open_disk(self) -> sqlite3.Connection:
        self._folder = tempfile.TemporaryDirectory(prefix="billing-fetch-index-")
        disk = sqlite3.connect(Path(self._folder.name) / "seen.db", isolation_level=None)
        disk.execute("PRAGMA journal_mode=OFF")
        disk.execute("PRAGMA synchronous=OFF")
        disk.execute(f"PRAGMA cache_size=-{DISK_CACHE_KIB}")
        disk.execute(
            "CREATE TABLE seen (key BLOB PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID"
        )
        self._disk = disk
        return disk


def _filter_position(key_digest: bytes) -> int:
    """The key's bit in the spilled-keys filter: the first FILTER_BITS_LOG2 bits of its digest."""
    return int.from_bytes(key_digest[:3], "big") >> (24 - FILTER_BITS_LOG2)


def _lookup_statement(keys: int) -> str:
    """SELECT of the stored values of `keys` bound keys (only placeholders are interpolated)."""
    marks = ",".join("?" * keys)
    return f"SELECT key, value FROM seen WHERE key IN ({marks})"  # noqa: S608 - placeholders


def _signed(value: int) -> int:
    """An unsigned 64-bit digest as the signed integer SQLite stores."""
    return value - (1 << 64) if value >= 1 << 63 else value
