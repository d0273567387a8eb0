"""The org directory read one `orgs:` entry at a time: same result as a whole parse, less memory."""

import gc
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from billing.catalog import load_org_directory, yamlsource
from billing.catalog.yamlsource import read_yaml, stream_yaml_list
from billing.errors import ConfigError

ANCHORED = """\
# keys before and after orgs:, entries merging shared defaults, an alias of a whole entry
defaults: &defaults
  rate_card: enterprise-eur
  email: [billing@shared.example]
default_rate_card: standard
orgs:
  - org_id: org-0001
    name: Acme
    <<: *defaults
  - &globex
    org_id: org-0002
    name: Globex
    address: |
      Globex Inc.
      Springfield
    email: [ap@globex.example]
  - {<<: [*globex, *defaults], org_id: org-0003, name: Initech}
  - *globex
tail: [1, 2]
"""

EMPTY_ORGS = "default_rate_card: standard\norgs: []\nlater: 1\n"
NULL_ORGS = "default_rate_card: standard\norgs:\n"
FLOW = "{default_rate_card: standard, orgs: [{org_id: a, name: A}, {org_id: b, name: B}]}\n"


def write(tmp_path: Path, text: str, name: str = "orgs.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def streamed(path: Path) -> tuple[Any, list[tuple[int, Any]]]:
    """The head data and every (index, item) of `orgs:` as the stream handed them over."""
    items: list[tuple[int, Any]] = []
    source = stream_yaml_list(path, "orgs", lambda index, item: items.append((index, item)))
    return source.data, items


@pytest.mark.parametrize("text", [ANCHORED, EMPTY_ORGS, NULL_ORGS, FLOW])
def test_streamed_data_equals_a_whole_document_parse(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    whole = yaml.safe_load(text)
    head, items = streamed(path)
    assert [index for index, _ in items] == list(range(len(items)))
    if items:
        head = {**head, "orgs": [item for _, item in items]}
    assert head == whole
    assert list(head) == list(whole)  # the key order too


DIRECTORY = """\
orgs:
  - &acme
    org_id: org-0001
    name: Acme
    rate_card: enterprise-eur
    email: &shared [billing@shared.example]
  - <<: *acme
    org_id: org-0002
    name: Globex
    address: |
      Globex Inc.
      Springfield
  - {<<: *acme, org_id: org-0003, name: Initech, email: *shared, discount_percent: "5"}
default_rate_card: standard
"""


def test_streamed_directory_equals_one_without_anchors(tmp_path: Path) -> None:
    # The whole-document parse, written back as JSON (valid YAML) with every alias expanded.
    expanded = write(tmp_path, json.dumps(yaml.safe_load(DIRECTORY)), "expanded.yaml")
    directory = load_org_directory(write(tmp_path, DIRECTORY))
    reference = load_org_directory(expanded)
    assert directory.orgs == reference.orgs
    assert directory.entry_index == reference.entry_index
    assert directory.entry_index == {"org-0001": 0, "org-0002": 1, "org-0003": 2}
    assert directory.default_rate_card == "standard"
    globex = directory.orgs["org-0002"]
    assert (globex.rate_card_id, globex.emails, globex.billing_address) == (
        "enterprise-eur",
        ("billing@shared.example",),
        "Globex Inc.\nSpringfield",
    )
    assert str(directory.orgs["org-0003"].discount_percent) == "5"
    assert directory.where("org-0002", "address").endswith("orgs.yaml:10")


def test_without_libyaml_the_pure_python_loader_streams_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, ANCHORED)
    with_libyaml = streamed(path)
    monkeypatch.setattr(yamlsource, "_LIST_LOADER", yaml.SafeLoader)
    assert streamed(path) == with_libyaml


def test_an_empty_orgs_list_gives_an_empty_directory(tmp_path: Path) -> None:
    directory = load_org_directory(write(tmp_path, EMPTY_ORGS.replace("later: 1\n", "")))
    assert (directory.default_rate_card, directory.orgs) == ("standard", {})


THREE_ENTRIES_THIRD_BROKEN = """\
default_rate_card: standard
orgs:
  - {org_id: a, name: A}
  - {org_id: b, name: B}
  - {org_id: c, name: C
  - {org_id: d, name: D}
"""


def test_a_syntax_error_in_the_third_entry_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_ENTRIES_THIRD_BROKEN)
    items: list[Any] = []
    with pytest.raises(ConfigError) as raised:
        stream_yaml_list(path, "orgs", lambda _, item: items.append(item))
    assert str(raised.value).startswith(f"{path}:6: not valid YAML (")
    assert items == [{"org_id": "a", "name": "A"}, {"org_id": "b", "name": "B"}]  # streamed
    with pytest.raises(ConfigError) as whole:
        read_yaml(path)
    assert str(whole.value) == str(raised.value)  # the message read_yaml gives
    with pytest.raises(ConfigError) as loaded:
        load_org_directory(path)
    assert str(loaded.value) == str(raised.value)


def test_a_second_document_is_rejected_on_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "default_rate_card: standard\norgs: []\n---\norgs: []\n")
    with pytest.raises(ConfigError) as raised:
        load_org_directory(path)
    assert str(raised.value) == f"{path}:3: not valid YAML (but found another document)"
    with pytest.raises(ConfigError) as whole:
        read_yaml(path)
    assert str(whole.value) == str(raised.value)


def test_orgs_listed_twice_is_rejected_naming_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "default_rate_card: standard\norgs:\n  - {org_id: a, name: A}\n"
        "later: 1\norgs:\n  - {org_id: b, name: B}\n",
    )
    with pytest.raises(ConfigError) as raised:
        load_org_directory(path)
    assert str(raised.value) == f"{path}:5: key 'orgs' appears twice (first on line 2)"


def generated_directory(path: Path, orgs: int) -> Path:
    entries = [
        f'  - {{org_id: org-{n:04d}, name: Org {n:04d} Ltd, address: "Org {n:04d} Ltd\\n'
        f'{n} Example Street\\nSpringfield", email: [billing@org-{n:04d}.example]}}\n'
        for n in range(1, orgs + 1)
    ]
    path.write_text("default_rate_card: standard\norgs:\n" + "".join(entries), encoding="utf-8")
    return path


def traced(load: Callable[[], object]) -> tuple[int, int]:
    """(peak, retained) bytes traced while `load` runs, beyond what was allocated before."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = load()  # kept alive until measured: it is the retained part
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result is not None
    return peak - before, retained - before


def test_memory_peak_is_about_the_result_not_the_whole_parse(tmp_path: Path) -> None:
    path = generated_directory(tmp_path / "orgs.yaml", 5_000)
    load_org_directory(generated_directory(tmp_path / "warm.yaml", 2))  # one-time caches
    peak, retained = traced(lambda: load_org_directory(path))
    whole_parse_peak, _ = traced(lambda: read_yaml(path))
    # Streamed: the directory itself, the text and one entry in flight (about 1.2 x retained);
    # a whole-document parse, as the directory was read before, peaks at about 7 x.
    assert peak < 2 * retained, (peak, retained)
    assert peak < whole_parse_peak / 2, (peak, whole_parse_peak)
