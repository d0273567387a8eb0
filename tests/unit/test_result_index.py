"""The fetch's index of results kept: replays and conflicts are found on disk as in memory, and
memory stays bounded however many results a fetch has."""

from __future__ import annotations

import hashlib
import tracemalloc

from billing.usage.result_index import ResultIndex


def key(number: int) -> bytes:
    return hashlib.blake2b(str(number).encode(), digest_size=16).digest()


HIGH_BIT = (1 << 63) + 12345  # a values digest SQLite cannot store unsigned


def test_replays_and_conflicts_are_found_after_the_spill() -> None:
    index = ResultIndex(spill_after=3)
    assert [index.classify(key(n), n) for n in range(10)] == ["new"] * 10
    assert index.classify(key(10), HIGH_BIT) == "new"
    assert index.spilled == 9
    assert len(index) == 11
    assert index.classify(key(0), 0) == "duplicate"  # spilled
    assert index.classify(key(9), 9) == "duplicate"  # in memory
    assert index.classify(key(1), 2) == "conflicting"  # spilled, other values
    assert index.classify(key(10), HIGH_BIT) == "duplicate"
    for _ in range(3):
        index.classify(key(99), 99)  # pushes key 10 to disk
    assert index.classify(key(10), HIGH_BIT) == "duplicate"
    assert index.classify(key(10), HIGH_BIT - 1) == "conflicting"


def test_close_removes_the_temporary_file() -> None:
    index = ResultIndex(spill_after=2)
    for n in range(5):
        index.classify(key(n), n)
    folder = index.disk_folder
    assert folder is not None
    assert folder.is_dir()
    index.close()
    assert not folder.exists()


def peak_traced_mib(index: ResultIndex, results: int) -> float:
    tracemalloc.start()
    try:
        for n in range(results):
            index.classify(key(n), n)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
        index.close()


def test_memory_is_bounded_by_the_spill_not_by_the_results() -> None:
    spilling = peak_traced_mib(ResultIndex(spill_after=10_000), 200_000)
    unbounded = peak_traced_mib(ResultIndex(spill_after=10**9), 200_000)
    assert unbounded > 20  # a dict of every digest: what the bound avoids
    assert spilling < 5, f"{spilling:.1f} MiB traced while spilling every 10,000 digests"
