"""PDF statements: Jinja2 renders autoescaped HTML; WeasyPrint prints it with shipped assets."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from billing.config import PROJECT_ROOT, Settings
from billing.domain import Statement
from billing.errors import OutputError
from billing.statements import formatting

SHIPPED_TEMPLATES = PROJECT_ROOT / "templates"


def template_environment(override_dir: Path | None, locale: str) -> Environment:
    """Templates from the override folder first, then the shipped ones; always autoescaped."""
    folders = [str(override_dir)] if override_dir else []
    folders.append(str(SHIPPED_TEMPLATES))
    environment = Environment(
        loader=ChoiceLoader([FileSystemLoader(folder) for folder in folders]),
        autoescape=select_autoescape(["html", "xml"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["money"] = lambda amount, currency: formatting.money(
        amount, currency, locale
    )
    environment.filters["qty"] = lambda value: formatting.quantity(value, locale)
    environment.filters["unit"] = formatting.unit_label
    return environment


def is_shipped_asset(url: str, asset_roots: list[Path]) -> Path | None:
    """The local file a URL names when it lies under one of the asset roots, else None."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    target = Path(unquote(parts.path)).resolve()
    for root in asset_roots:
        if target.is_relative_to(root.resolve()) and target.is_file():
            return target
    return None


def asset_fetcher(asset_roots: list[Path]) -> Any:
    """A WeasyPrint URL fetcher that serves files under the asset roots and refuses all else."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class AssetsOnlyFetcher(URLFetcher):  # type: ignore[misc]
        def fetch(self, url: str, headers: Any = None) -> Any:
            target = is_shipped_asset(url, asset_roots)
            if target is None:
                raise ValueError(f"statement rendering refuses to fetch {url[:80]!r}")
            content_type = "text/css" if target.suffix == ".css" else "application/octet-stream"
            return URLFetcherResponse(url, target.read_bytes(), {"Content-Type": content_type})

    return AssetsOnlyFetcher(allowed_protocols=("file",), allow_redirects=False)


@lru_cache(maxsize=4)
def _font_configuration() -> Any:
    from weasyprint.text.fonts import FontConfiguration

    return FontConfiguration()


class StatementRenderer:
    """Renders statements to PDF bytes; build one per process and reuse it."""

    def __init__(self, override_dir: Path | None, locale: str, issuer_name: str) -> None:
        self._environment = template_environment(override_dir, locale)
        self._issuer_name = issuer_name
        roots = [SHIPPED_TEMPLATES / "assets"]
        if override_dir:
            roots.insert(0, override_dir / "assets")
        self._base_url = (override_dir or SHIPPED_TEMPLATES).resolve().as_uri() + "/"
        self._fetcher = asset_fetcher(roots)

    @classmethod
    def from_settings(cls, settings: Settings) -> StatementRenderer:
        """The renderer the settings describe (templates, locale, issuer)."""
        return cls(settings.templates_dir, settings.locale, settings.issuer_name)

    @property
    def environment(self) -> Environment:
        return self._environment

    def html(self, statement: Statement) -> str:
        descriptions = {charge.meter: charge.description for charge in statement.charges}
        lines = sorted(
            statement.lines,
            key=lambda line: (line.api_key_id is None, line.api_key_id or "", line.user_id or ""),
        )
        template = self._environment.get_template("statement.html")
        return template.render(
            s=statement,
            lines=lines,
            descriptions=descriptions,
            issuer_name=self._issuer_name,
            last_day=(statement.period_end - timedelta(days=1)).strftime("%Y-%m-%d"),
            zero=Decimal(0),
        )

    def pdf(self, statement: Statement) -> bytes:
        from weasyprint import HTML

        try:
            document = HTML(
                string=self.html(statement), base_url=self._base_url, url_fetcher=self._fetcher
            )
            pdf: bytes = document.write_pdf(font_config=_font_configuration())
        except OSError as error:
            raise OutputError(f"org {statement.org_id}: PDF rendering failed: {error}") from None
        return pdf
