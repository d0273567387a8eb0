"""File names from upstream ids: short whatever the id's length, and never one id's name for
another id, even an id made to look like another's hashed name."""

from __future__ import annotations

from billing.statements.files import safe_stem

HOSTILE_IDS = [
    "o" * 300 + "-1",
    "o" * 300 + "-2",
    "ö/" * 160,
    "../" * 200 + "etc/passwd",
    '=HYPERLINK("http://x")' * 20,
    "\x1b[31m" * 100,
    "<b>" + "x" * 5000 + "</b>",
    "a/",
    "a_",
    "a",
]


def test_names_of_long_and_hostile_ids_are_short_safe_and_distinct() -> None:
    stems = [safe_stem(org_id) for org_id in HOSTILE_IDS]
    assert all(len(stem) <= 91 for stem in stems)
    assert all(
        stem
        and set(stem) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        for stem in stems
    )
    assert all(not stem.startswith(".") for stem in stems)
    assert len(set(stems)) == len(HOSTILE_IDS)


def test_an_id_shaped_like_a_hashed_name_does_not_take_that_name() -> None:
    hashed = safe_stem("a/")
    assert hashed.startswith("a-")
    assert safe_stem(hashed) != hashed
    assert len({safe_stem("a/"), safe_stem(hashed), safe_stem(safe_stem(hashed))}) == 3


def test_ordinary_ids_keep_their_names() -> None:
    assert safe_stem("org-0001") == "org-0001"
    assert safe_stem("acme.robotics_eu") == "acme.robotics_eu"
