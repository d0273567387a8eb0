"""The fetch's index of results kept: replays and conflicts are found in the file as in memory,
and memory stays bounded however many results a fetch has."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from collections.abc import Sequence

import pytest

from billing.usage import result_index
from billing.usage.result_index import (
    KEY_BYTES,
    PARTITION_BITS,
    SPILL_AFTER,
    ResultIndex,
    ResultKind,
)


def key(number: int) -> bytes:
    return hashlib.blake2b(str(number).encode(), digest_size=16).digest()


HIGH_BIT = (1 << 63) + 12345  # a values digest that does not fit a signed 64-bit integer


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


def test_a_page_is_classified_in_order_across_memory_and_the_file() -> None:
    index = ResultIndex(spill_after=4)
    assert index.classify_page([key(n) for n in range(6)], list(range(6))) == ["new"] * 6
    assert (index.spilled, len(index)) == (6, 6)  # the spill waits for the page's end
    assert index.classify_page([key(6), key(7)], [6, 7]) == ["new", "new"]
    kinds = index.classify_page(
        [key(0), key(6), key(8), key(8), key(8), key(1), key(7), key(9)],
        [0, 6, 8, 8, 80, 10, 70, 9],
    )
    assert kinds == [
        "duplicate",  # in the file
        "duplicate",  # in memory
        "new",
        "duplicate",  # earlier in the same page
        "conflicting",  # earlier in the same page, other values
        "conflicting",  # in the file, other values
        "conflicting",  # in memory, other values
        "new",
    ]
    assert (index.spilled, len(index)) == (10, 10)
    assert index.classify_page([], []) == []


def test_one_key_and_a_page_of_keys_find_each_other() -> None:
    index = ResultIndex(spill_after=50)
    for n in range(0, 200, 2):
        assert index.classify(key(n), n) == "new"
    page = [key(n) for n in range(200)]
    assert index.classify_page(page, list(range(200))) == ["duplicate", "new"] * 100
    assert [index.classify(key(n), n + (n % 4 == 1)) for n in range(200)] == [
        "duplicate",
        "conflicting",
        "duplicate",
        "duplicate",
    ] * 50
    assert index.spilled > 0


def test_sixteen_bytes_across_two_records_are_not_a_key() -> None:
    """A key is found only where a record starts, in memory and in the file."""
    # Bytes 8-15 repeat bytes 0-7: the record's second half has the key's partition and
    # filter bit, so it is looked for in the same partition, in memory and in the file.
    first = bytes([7, 7, 1, 2, 9, 9, 9, 9] * 2)
    values = 0x1122334455667788
    straddling = first[8:] + values.to_bytes(8, "little")  # the record's second half
    for spill_after in (1, 10):
        index = ResultIndex(spill_after=spill_after)
        assert index.classify(first, values) == "new"
        assert index.classify(straddling, 1) == "new"
        assert index.classify_page([straddling, first], [1, values]) == ["duplicate"] * 2
        assert index.classify(straddling, 2) == "conflicting"
        index.close()


def test_keys_must_be_digests_of_sixteen_bytes() -> None:
    index = ResultIndex()
    with pytest.raises(ValueError, match="16 bytes"):
        index.classify(b"short", 1)
    with pytest.raises(ValueError, match="16 bytes"):
        index.classify_page([key(1), b"short"], [1, 2])
    with pytest.raises(ValueError, match="as many"):
        index.classify_page([key(1)], [1, 2])


def reference_kinds(
    seen: dict[bytes, int], keys: Sequence[bytes], values: Sequence[int]
) -> list[ResultKind]:
    """What the index must answer: a plain dict of every key, in order."""
    kinds: list[ResultKind] = []
    for digest, value in zip(keys, values, strict=True):
        if digest not in seen:
            seen[digest] = value
            kinds.append("new")
        else:
            kinds.append("duplicate" if seen[digest] == value else "conflicting")
    return kinds


@pytest.mark.parametrize("spill_after", [3, 64, 1_000, None])
def test_every_answer_is_that_of_a_plain_dict(spill_after: int | None) -> None:
    """Random pages with replays, repeats within a page and conflicts, against a dict; a small
    partition count puts many keys in each partition."""
    rnd = random.Random(spill_after)
    index = ResultIndex(spill_after=spill_after)
    seen: dict[bytes, int] = {}
    universe = [key(n) for n in range(3_000)]
    for _ in range(60):
        size = rnd.choice([0, 1, 5, 100, 500])
        keys = [rnd.choice(universe) for _ in range(size)]
        # Mostly the values a key was first seen with (a replay), sometimes others.
        values = [
            seen.get(digest, HIGH_BIT) if rnd.random() < 0.98 else rnd.randrange(1 << 64)
            for digest in keys
        ]
        if rnd.random() < 0.5:
            assert index.classify_page(keys, values) == reference_kinds(seen, keys, values)
        else:
            pairs = zip(keys, values, strict=True)
            kinds = [index.classify(digest, value) for digest, value in pairs]
            assert kinds == reference_kinds(seen, keys, values)
        assert len(index) == len(seen)
    index.close()


def fill(index: ResultIndex, results: int, page: int = 500) -> None:
    for start in range(0, results, page):
        numbers = range(start, min(start + page, results))
        index.classify_page([key(n) for n in numbers], list(numbers))


def peak_traced_mib(index: ResultIndex, results: int) -> float:
    tracemalloc.start()
    try:
        fill(index, results)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
        index.close()


def dict_traced_mib(results: int) -> float:
    """What a plain dict of the same digests would hold."""
    tracemalloc.start()
    try:
        seen = {key(n): n for n in range(results)}
        assert len(seen) == results
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_spill_not_by_the_results() -> None:
    spilling = peak_traced_mib(ResultIndex(spill_after=10_000), 200_000)
    assert spilling < 5, f"{spilling:.1f} MiB traced while spilling every 10,000 digests"
    # In memory a key costs its 24 bytes and a share of its partition, not a dict entry.
    compact = peak_traced_mib(ResultIndex(spill_after=10**9), 200_000)
    assert compact < 8, f"{compact:.1f} MiB traced for 200,000 digests in memory"
    assert dict_traced_mib(200_000) > 3 * compact


def test_the_default_bound_keeps_memory_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SPILL_AFTER keys the records go to the file: at most about 7 MiB of them in
    memory, and 1 MiB of filter."""
    assert SPILL_AFTER == 1 << 18
    assert PARTITION_BITS == 14
    assert KEY_BYTES == 16
    index = ResultIndex()
    peak = peak_traced_mib(index, SPILL_AFTER + 20_000)
    assert SPILL_AFTER <= index.spilled < SPILL_AFTER + 500
    assert peak < 10, f"{peak:.1f} MiB traced for {SPILL_AFTER + 20_000:,} digests"
    monkeypatch.setattr(result_index, "SPILL_AFTER", 1_000)
    smaller = ResultIndex()
    fill(smaller, 2_500)
    assert (smaller.spilled, len(smaller)) == (2_000, 2_500)  # read when the index is made
    smaller.close()
