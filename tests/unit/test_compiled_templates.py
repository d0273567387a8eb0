"""Templates compile once per process and still change when their file does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, TemplateSyntaxError

from billing.statements.pdf import template_environment


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the templates Jinja's compiler is asked to compile from now on."""
    seen: list[str] = []
    compile_source = Environment.compile

    def counted(self: Environment, source: Any, name: str | None = None, *args: Any) -> Any:
        seen.append(str(name))
        return compile_source(self, source, name, *args)

    monkeypatch.setattr(Environment, "compile", counted)
    return seen


def test_a_second_environment_reuses_the_first_ones_compiled_template(
    tmp_path: Path, compiles: list[str]
) -> None:
    (tmp_path / "note.html").write_text("<p>{{ who }}</p>", encoding="utf-8")

    first = template_environment(tmp_path, "en_US").get_template("note.html")
    second = template_environment(tmp_path, "de_DE").get_template("note.html")

    assert compiles == ["note.html"]
    assert first.render(who="<b>") == second.render(who="<b>") == "<p>&lt;b&gt;</p>"


def test_a_changed_file_is_compiled_again_and_a_broken_one_is_never_kept(
    tmp_path: Path, compiles: list[str]
) -> None:
    note = tmp_path / "note.html"
    note.write_text("one {{ n }}", encoding="utf-8")
    assert template_environment(tmp_path, "en_US").get_template("note.html").render(n=1) == "one 1"

    note.write_text("two {{ n + 1 }}", encoding="utf-8")
    assert template_environment(tmp_path, "en_US").get_template("note.html").render(n=1) == "two 2"

    note.write_text("{% if %}", encoding="utf-8")
    for _ in range(2):
        with pytest.raises(TemplateSyntaxError):
            template_environment(tmp_path, "en_US").get_template("note.html")
    assert compiles == ["note.html"] * 4
