"""The cost-centre file's `shared:` rules: what loads, and every problem at once with its
file, line and field."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from billing.errors import ConfigError
from billing.statements.allocation import load_cost_centres

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BAD = """\
orgs:
  org-0001: research
shared:
  - name: one
    from: {amount: 2000.00, currency: USD}
    to: {method: even}
  - name: one
    from: {centre: ops, orgs: [org-1]}
    to:
      method: fixed
      percentages:
        a: "60"
        b: 40.5
  - name: three
    from: {centre: ops}
    to: {method: fixed, percentages: {a: "60", b: "30"}}
  - name: four
    from: {amount: "10.001", currency: USD}
    to: {method: spread, centres: [ops]}
  - name: five
    from: {centre: ops}
    to: {method: even, centres: [ops, a]}
  - name: six
    from: {amount: "10", currency: XXQ}
    to: {method: weighted, percentages: {a: "100"}}
  - name: seven
    from: {orgs: [org-1]}
    to: {method: fixed, percentages: {a: "50.00001", b: "49.99999"}, exclude: [c]}
"""


def test_every_problem_of_a_bad_file_at_once_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "centres.yaml"
    path.write_text(BAD, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cost_centres(path)
    problems = str(caught.value).split("; ")
    expected = [
        (5, "shared.0.from.amount", 'write 2000.0 in quotes ("2000.0")'),
        (7, "shared.1.name", "rule name 'one' is already taken"),
        (8, "shared.1.from", "give exactly one of centre, orgs, api_keys, users or amount"),
        (13, "shared.1.to.percentages.b", 'write 40.5 in quotes ("40.5")'),
        (16, "shared.2.to.percentages", "must add up to exactly 100, they add up to 90"),
        (18, "shared.3.from", "10.001 has more places than USD allows"),
        (19, "shared.3.to.method", "Input should be 'even', 'weighted' or 'fixed'"),
        (20, "shared.4", "centre ops cannot share its cost with itself"),
        (24, "shared.5.from", "unknown ISO 4217 currency 'XXQ'"),
        (25, "shared.5.to", "percentages go only with method fixed, not weighted"),
        (28, "shared.6.to.percentages", "a: 50.00001 has more than 4 places"),
    ]
    assert len(problems) == len(expected), problems
    for problem, (line, field, message) in zip(problems, expected, strict=True):
        assert problem.startswith(f"{path}:{line}: field {field}: "), problem
        assert message in problem, problem


@pytest.mark.parametrize(
    ("rule", "line", "field", "message"),
    [
        ("{name: a, to: {method: even}}", 3, "shared.0.from", "Field required"),
        ("{name: a, from: {}, to: {method: even}}", 3, "shared.0.from", "give exactly one"),
        ("{name: a b, from: {centre: x}, to: {method: even}}", 3, "shared.0.name", "pattern"),
        ("{name: a, from: {orgs: []}, to: {method: even}}", 3, "shared.0.from", "at least one"),
        ("{name: a, from: {amount: '5'}, to: {method: even}}", 3, "shared.0.from", "currency"),
        (
            "{name: a, from: {amount: '-5', currency: EUR}, to: {method: even}}",
            3,
            "shared.0.from",
            "more than zero",
        ),
        (
            "{name: a, from: {centre: x, currency: EUR}, to: {method: even}}",
            3,
            "shared.0.from",
            "only with a fixed amount",
        ),
        (
            "{name: a, from: {centre: x}, to: {method: fixed}}",
            3,
            "shared.0.to",
            "needs percentages",
        ),
        (
            "{name: a, from: {centre: x},"
            " to: {method: fixed, percentages: {y: 100}, centres: [y]}}",
            3,
            "shared.0.to",
            "drop centres",
        ),
        (
            "{name: a, from: {centre: x}, to: {method: fixed, percentages: {y: '110', z: '-10'}}}",
            3,
            "shared.0.to.percentages",
            "more than 100",
        ),
        (
            "{name: a, from: {centre: x}, to: {method: fixed, percentages: {y: true}}}",
            3,
            "shared.0.to.percentages.y",
            "a number in quotes",
        ),
        (
            "{name: a, from: {centre: x}, to: {method: even, centres: []}}",
            3,
            "shared.0.to",
            "at least one centre",
        ),
        (
            "{name: a, from: {centre: x}, to: {method: even}, extra: 1}",
            3,
            "shared.0.extra",
            "Extra inputs",
        ),
    ],
)
def test_one_bad_rule_names_its_line_and_field(
    tmp_path: Path, rule: str, line: int, field: str, message: str
) -> None:
    path = tmp_path / "centres.yaml"
    path.write_text(f"orgs: {{org-1: x}}\nshared:\n  - {rule}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cost_centres(path)
    assert str(caught.value).startswith(f"{path}:{line}: field {field}: "), str(caught.value)
    assert message in str(caught.value)


def test_a_good_file_loads_exact_numbers(tmp_path: Path) -> None:
    path = tmp_path / "centres.yaml"
    path.write_text(
        "shared:\n"
        "  - name: rent\n"
        "    from: {amount: 2000, currency: JPY}\n"
        "    to: {method: fixed, percentages: {a: '33.3333', b: '66.6667'}}\n"
        "  - name: ops\n"
        "    from: {users: [user-1]}\n"
        "    to: {method: weighted, centres: [a, b, c], exclude: [c]}\n",
        encoding="utf-8",
    )
    loaded = load_cost_centres(path)
    rent, ops = loaded.shared
    assert rent.source.amount == Decimal(2000)
    assert rent.explicit_targets() == ("a", "b")
    assert ops.explicit_targets() == ("a", "b")
    assert ops.source.matches("x", "org-1", None, "user-1")
    assert not ops.source.matches("x", "org-1", None, "user-2")


def test_the_example_file_loads_with_its_shared_rule() -> None:
    loaded = load_cost_centres(EXAMPLES / "cost_centres.yaml")
    assert [rule.name for rule in loaded.shared] == ["platform-overhead"]
    assert loaded.shared[0].source.centre in loaded.orgs.values()
