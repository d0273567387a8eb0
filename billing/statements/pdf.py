"""PDF statements: Jinja2 renders autoescaped HTML; WeasyPrint prints it with shipped assets."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property, lru_cache, partial
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

from jinja2 import (
    BytecodeCache,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    select_autoescape,
)
from jinja2.bccache import Bucket
from markupsafe import Markup

from billing.config import PROJECT_ROOT, Settings
from billing.credit_notes import CreditNoteDocument
from billing.domain import MINIMUM_CHARGE_METER, Statement, StatementCharge
from billing.errors import OutputError
from billing.statements import formatting
from billing.statements.breakdown import DEFAULT_BREAKDOWN, BreakdownRule
from billing.statements.chart import daily_hours_svg
from billing.statements.printed_html import (
    MemoryImages,
    html_document,
    memory_fetcher,
    without_block_whitespace,
)
from billing.states import ChargeClass

SHIPPED_TEMPLATES = PROJECT_ROOT / "templates"
STYLESHEET = "statement.css"
LOGO = "logo.svg"
PAGE_SIZES = ("A4", "Letter")
NO_PAYMENT_INSTRUCTIONS = formatting.PaymentInstructions()
# The files whose shipped versions the optimised print path was checked against pixel by pixel
# (tests/unit/test_pdf_pixels.py); an override folder with its own copy of any of them prints
# through the plain path.
OPTIMISED_FOR = ("statement.html", "masthead.html", "credit_note.html", f"assets/{STYLESHEET}")

P = ParamSpec("P")
T = TypeVar("T")

# C0/C1 controls (but tab and newline), and the bidi embeddings, overrides and isolates that
# could reorder what a reader sees; printed text from user data never carries them.
_HIDDEN_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

_CONTENT_TYPES = {
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
}


def printable(value: Any) -> Any:
    """What a template prints: plain strings lose hidden control characters; markup is kept."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return _HIDDEN_CONTROLS.sub("", value)
    return value


class CompiledTemplates(BytecodeCache):
    """This process's compiled templates, by file and source checksum, kept in memory.

    Every renderer, report and email builds its own environment (per locale and override
    folder), and each would compile the same templates again: about 3% of a closing process's
    time went to Jinja's compiler. The environments share one cache because they are built
    with the same options (template_environment); a changed file has another checksum and is
    compiled again, and a template that does not compile is never kept.
    """

    def __init__(self) -> None:
        self._compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        compiled = self._compiled.get(bucket.key)
        if compiled is not None:
            bucket.bytecode_from_string(compiled)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._compiled[bucket.key] = bucket.bytecode_to_string()

    def clear(self) -> None:
        self._compiled.clear()


_compiled_templates = CompiledTemplates()


def template_environment(override_dir: Path | None, locale: str) -> Environment:
    """Templates from the override folder first, then the shipped ones; always autoescaped;
    compiled once per process (CompiledTemplates)."""
    folders = [str(override_dir)] if override_dir else []
    folders.append(str(SHIPPED_TEMPLATES))
    environment = Environment(
        loader=ChoiceLoader([FileSystemLoader(folder) for folder in folders]),
        autoescape=select_autoescape(["html", "xml"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=printable,
        bytecode_cache=_compiled_templates,
    )
    environment.filters["money"] = lambda amount, currency: formatting.money(
        amount, currency, locale
    )
    environment.filters["qty"] = lambda value: formatting.quantity(value, locale)
    environment.filters["unit"] = formatting.unit_label
    environment.filters["measure"] = lambda value, unit: formatting.measure(value, unit, locale)
    environment.filters["pricing"] = lambda text, currency: formatting.display_pricing(
        text, currency, locale
    )
    environment.filters["tax_id_label"] = formatting.tax_id_label
    environment.filters["shown"] = shown_amount
    environment.filters["day"] = lambda moment: formatting.day(moment, locale)
    return environment


def asset_roots(override_dir: Path | None) -> list[Path]:
    """The folders assets may come from: the override folder's assets/ first, then shipped."""
    roots = [SHIPPED_TEMPLATES / "assets"]
    if override_dir:
        roots.insert(0, override_dir / "assets")
    return roots


def find_asset(name: str, roots: list[Path]) -> Path:
    """The first root's copy of an asset (so an override folder can replace a shipped one)."""
    for root in roots:
        if (root / name).is_file():
            return (root / name).resolve()
    raise OutputError(f"statement asset {name!r} is missing from {roots[-1]}")


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
            content_type = _CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream")
            return URLFetcherResponse(
                target.as_uri(), target.read_bytes(), {"Content-Type": content_type}
            )

    return AssetsOnlyFetcher(allowed_protocols=("file",), allow_redirects=False)


@lru_cache(maxsize=1)
def _font_configuration() -> Any:
    """The process's one FontConfiguration: fontconfig is loaded once, not per document."""
    from weasyprint.text.fonts import FontConfiguration

    return FontConfiguration()


class PrintEngine(NamedTuple):
    """What a renderer hands WeasyPrint with every document."""

    document_fetcher: Any  # memory images first, then the asset folders only
    stylesheets: list[Any]  # the statement stylesheet and the page size, compiled


class StatementRenderer:
    """Renders statements to PDF bytes; build one per process and reuse it.

    The template is loaded once here, the stylesheet compiled once on the first print (the
    engine, `_engine`); images (the logo) are decoded once per renderer.
    `billing.statements.parallel` runs one renderer per worker process.
    """

    def __init__(
        self,
        override_dir: Path | None,
        locale: str,
        issuer_name: str,
        issuer_address: str = "",
        payment_terms_days: int = 30,
        page_size: str = "A4",
        breakdown: BreakdownRule = DEFAULT_BREAKDOWN,
        optimised: bool = True,
        issuer_tax_id: str = "",
        payment: formatting.PaymentInstructions = NO_PAYMENT_INSTRUCTIONS,
    ) -> None:
        if page_size not in PAGE_SIZES:
            raise OutputError(f"page size {page_size!r} is not one of {', '.join(PAGE_SIZES)}")
        self._environment = template_environment(override_dir, locale)
        self._locale = locale
        self._issuer_name = issuer_name
        self._issuer_address = issuer_address
        self._payment_terms = timedelta(days=payment_terms_days)
        self._breakdown = breakdown
        self._issuer_tax_id = issuer_tax_id.strip()
        self._payment = payment
        self._roots = asset_roots(override_dir)
        self._base_url = (override_dir or SHIPPED_TEMPLATES).resolve().as_uri() + "/"
        self._logo_url = find_asset(LOGO, self._roots).as_uri()
        self._template = self._environment.get_template("statement.html")
        self._image_cache: dict[str, Any] = {}
        # The optimised path prints the same page faster (same pixels): the chart handed over
        # as an SVG image from memory instead of markup for the HTML parser, no whitespace
        # text between block tags, and the tree built by expat rather than the pure-Python
        # HTML parser (printed_html.html_document). `optimised=False` is the plain path the
        # pixel test compares.
        self._optimised = optimised and not (
            override_dir and any((override_dir / name).exists() for name in OPTIMISED_FOR)
        )
        self._memory_images = MemoryImages()
        # Read now, compiled on the first print: the renderer prints the stylesheet it was
        # made with, as the render keys' fingerprint (taken before it) expects.
        stylesheet = find_asset(STYLESHEET, self._roots)
        self._stylesheet = (stylesheet.read_bytes(), stylesheet.as_uri())
        self._page_size = page_size

    @cached_property
    def _engine(self) -> PrintEngine:
        """WeasyPrint's part of the renderer, made on the first print: the engine's import
        (about 1 s a process), the fetchers and the compiled stylesheets. A process whose
        statements are all unchanged (their render keys match) never loads it."""
        from weasyprint import CSS

        fetcher = asset_fetcher(self._roots)
        font_config = _font_configuration()
        return PrintEngine(
            memory_fetcher(self._memory_images, fetcher),
            [
                CSS(
                    file_obj=io.BytesIO(self._stylesheet[0]),
                    base_url=self._stylesheet[1],
                    url_fetcher=fetcher,
                    font_config=font_config,
                ),
                CSS(string=f"@page {{ size: {self._page_size}; }}", font_config=font_config),
            ],
        )

    def ready(self) -> StatementRenderer:
        """The renderer with its engine loaded now, for processes forked from this one (a
        render pool's workers) to inherit."""
        _ = self._engine
        return self

    @classmethod
    def from_settings(cls, settings: Settings) -> StatementRenderer:
        """The renderer the settings describe (templates, locale, issuer, terms, page size)."""
        return cls(
            settings.templates_dir,
            settings.locale,
            settings.issuer_name,
            issuer_address=settings.issuer_address,
            payment_terms_days=settings.payment_terms_days,
            page_size=settings.page_size,
            breakdown=BreakdownRule(settings.statement_detail, settings.statement_detail_max_lines),
            issuer_tax_id=settings.issuer_tax_id,
            payment=payment_instructions(settings),
        )

    @property
    def environment(self) -> Environment:
        return self._environment

    @property
    def issuer_name(self) -> str:
        """The issuer the documents name (BILLING_ISSUER_NAME), also in their CSVs."""
        return self._issuer_name

    @property
    def optimised(self) -> bool:
        """Whether PDFs print through the optimised path (the chart as an image from memory, no
        whitespace between block tags, the tree built by expat) rather than the plain one."""
        return self._optimised

    def due_date(self, statement: Statement) -> datetime:
        """When the statement is due: its own due date, else issue date plus payment terms."""
        return statement.due_at or statement.issued_at + self._payment_terms

    def html(self, statement: Statement) -> str:
        """The statement's HTML, the chart inline as SVG markup (what the plain path prints)."""
        return self._statement_html(statement, None)

    def _statement_html(self, statement: Statement, chart_url: str | None) -> str:
        """The statement's HTML; with `chart_url`, the chart is an <img> of that URL and its
        SVG is served from memory under it."""
        charges_by_key = {charge.charge_key: charge for charge in statement.charges}
        # Tax lines (one per rate, no key or user) are in the totals, not the breakdown: the
        # breakdown closes on the total less the tax.
        lines = sorted(
            (line for line in statement.lines if line.charge_class != ChargeClass.TAX),
            key=lambda line: (
                line.api_key_id is None,
                line.api_key_id or "",
                line.user_id or "",
                line.charge_class,
            ),
        )
        table = charge_table(statement, self._locale)
        first_day = statement.period_start.date()
        end_exclusive = statement.period_end.date()
        chart = daily_hours_svg(statement.daily_usage, first_day, end_exclusive, self._locale)
        if chart_url is not None:
            self._memory_images.put(chart_url, chart.encode("utf-8"))
            chart = f'<img class="chart" src="{chart_url}" alt="" />'
        return self._template.render(
            s=statement,
            lines=lines,
            lines_total=sum((line.amount for line in lines), Decimal(0)),
            breakdown=self._breakdown.apply(lines, statement.charges),
            charges_by_key=charges_by_key,
            **table,
            payment=self._payment_box(statement),
            **self._masthead(statement.billing_address),
            issued=statement.issued_at.date(),
            due=self.due_date(statement).date(),
            first_day=first_day,
            last_day_date=end_exclusive - timedelta(days=1),
            last_day=(statement.period_end - timedelta(days=1)).strftime("%Y-%m-%d"),
            # chart.py draws only dates, numbers and a fixed title, and escapes its labels.
            chart=Markup(chart),  # noqa: S704
            zero=Decimal(0),
        )

    def _payment_box(self, statement: Statement) -> dict[str, object] | None:
        """What the "How to pay" box prints: the bank details and payment link of the settings
        and the payment reference (the invoice number); None when nothing is to be paid (a
        void invoice, or a total of zero or less)."""
        if statement.status == "void" or statement.total <= 0:
            return None
        link = self._payment.link_for(statement.invoice_number)
        return {
            "bank_lines": self._payment.bank_lines,
            "link": link,
            "clickable": bool(link) and self._payment.clickable(link),
            "reference": statement.invoice_number,
        }

    def pdf(self, statement: Statement) -> bytes:
        """The statement's PDF, printed in a Python frame stack chunk of its own."""
        name = f"org {statement.org_id}"
        if not self._optimised:
            return in_own_stack_chunk(self._print, partial(self.html, statement), name)
        chart_url = self._memory_images.new_url("chart.svg")
        try:
            return in_own_stack_chunk(
                self._print, partial(self._statement_html, statement, chart_url), name
            )
        finally:
            self._memory_images.forget(chart_url)
            self._image_cache.pop(chart_url, None)

    def _masthead(self, billing_address: str) -> dict[str, object]:
        """What templates/masthead.html reads: the issuer, the logo and the addressee's
        address, the same for a statement and a credit note."""
        return {
            "issuer_name": self._issuer_name,
            "issuer_address_lines": _lines(self._issuer_address),
            "billing_address_lines": _lines(billing_address),
            "issuer_tax_id": self._issuer_tax_id,
            "logo_url": self._logo_url,
        }

    def _print(self, html: Callable[[], str], document_name: str) -> bytes:
        """The PDF of the HTML `html` renders (a statement's or a credit note's); a failure is
        one OutputError naming the document."""
        from weasyprint import HTML

        try:
            text = html()
            engine = self._engine
            if self._optimised:
                document = html_document(
                    without_block_whitespace(text), self._base_url, engine.document_fetcher
                )
            else:
                document = HTML(
                    string=text, base_url=self._base_url, url_fetcher=engine.document_fetcher
                )
            pdf: bytes = document.write_pdf(
                stylesheets=engine.stylesheets,
                font_config=_font_configuration(),
                cache=self._image_cache,
            )
        except OSError as error:
            raise OutputError(f"{document_name}: PDF rendering failed: {error}") from None
        return pdf

    def credit_note_html(self, note: CreditNoteDocument) -> str:
        """A credit note's HTML (templates/credit_note.html, the statement's stylesheet)."""
        return self._environment.get_template("credit_note.html").render(
            n=note,
            net_lines=[line for line in note.lines if line.charge_class != ChargeClass.TAX],
            **self._masthead(note.billing_address),
            issued=note.created_at.date(),
            invoice_issued=note.invoice_issued_at.date(),
            first_day=note.billing_period.start.date(),
            last_day_date=note.billing_period.end.date() - timedelta(days=1),
        )

    def credit_note_pdf(self, note: CreditNoteDocument) -> bytes:
        """A credit note's PDF, printed like a statement's."""
        return in_own_stack_chunk(
            self._print, partial(self.credit_note_html, note), f"credit note {note.number}"
        )


def in_own_stack_chunk(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`call(*args, **kwargs)` from a frame that opens a large Python frame-stack chunk of its own.

    CPython before 3.13 keeps frames in 16 KiB chunks, maps a new chunk when a call does not fit
    and unmaps it as soon as that call returns (python/cpython#142183). WeasyPrint's layout
    recursion crosses a chunk boundary hundreds to thousands of times per PDF, and how often
    depends only on how deep the caller's stack already is: a forked pool worker's rendering
    took 2,000 to 5,000 minor page faults and up to 15% more CPU per PDF than the same PDF in
    the closing process. This frame declares an evaluation stack too large for any chunk in
    use (see below), so the interpreter maps a fresh 1 MiB chunk for it and the whole render
    runs inside that one chunk: one map per PDF, and only the pages used are touched.
    """
    return call(*args, **kwargs)


# 2**16 slots of 8 bytes: a 1 MiB chunk whose upper half is free for the render's frames.
in_own_stack_chunk.__code__ = in_own_stack_chunk.__code__.replace(co_stacksize=1 << 16)


def shared_renderer(settings: Settings) -> StatementRenderer:
    """This process's renderer for these settings, built on first use and then reused.

    For code that renders one statement per call (a task per invoice): a renderer built per
    call compiles the stylesheet again and starts with cold caches. Changes to an override
    folder's stylesheet are picked up by a new process.
    """
    return _renderer_for(*printing_settings(settings))


def printing_settings(settings: Settings) -> tuple[Any, ...]:
    """Every setting a statement's renderer is built from (and so a PDF depends on), in the
    order `_renderer_for` takes them: the override folder first."""
    return (
        settings.templates_dir,
        settings.locale,
        settings.issuer_name,
        settings.issuer_address,
        settings.payment_terms_days,
        settings.page_size,
        BreakdownRule(settings.statement_detail, settings.statement_detail_max_lines),
        settings.issuer_tax_id,
        payment_instructions(settings),
    )


def payment_instructions(settings: Settings) -> formatting.PaymentInstructions:
    """BILLING_PAYMENT_BANK_DETAILS and BILLING_PAYMENT_LINK, as statements and emails print
    them."""
    return formatting.PaymentInstructions(settings.payment_bank_details, settings.payment_link)


@lru_cache(maxsize=4)
def _renderer_for(
    override_dir: Path | None,
    locale: str,
    issuer_name: str,
    issuer_address: str,
    payment_terms_days: int,
    page_size: str,
    breakdown: BreakdownRule,
    issuer_tax_id: str,
    payment: formatting.PaymentInstructions,
) -> StatementRenderer:
    return StatementRenderer(
        override_dir,
        locale,
        issuer_name,
        issuer_address=issuer_address,
        payment_terms_days=payment_terms_days,
        page_size=page_size,
        breakdown=breakdown,
        issuer_tax_id=issuer_tax_id,
        payment=payment,
    )


def charge_table(statement: Statement, locale: str) -> dict[str, Any]:
    """The rows of the charges table, in the order the invoice is computed, and its totals.

    Usage and adjustments print at their list amount (before the org's discount) when one is
    stored, and the discount is one row of its own: the sum of the charges less the sum of
    their list amounts, so every printed row adds up, exactly, to the net total. Then minimum
    top-ups and corrections, the net total, one row per tax charge, the gross total (when
    taxed), the credit balance applied and the amount due (`Statement.total`).
    """
    credits: list[StatementCharge] = []
    usage: list[StatementCharge] = []
    adjustments: list[StatementCharge] = []
    top_ups: list[StatementCharge] = []
    corrections: list[StatementCharge] = []
    taxes: list[StatementCharge] = []
    for charge in statement.charges:
        if charge.charge_class == ChargeClass.CREDIT:
            credits.append(charge)
        elif charge.is_tax:
            taxes.append(charge)
        elif charge.is_correction:
            corrections.append(charge)
        elif charge.meter == MINIMUM_CHARGE_METER:
            top_ups.append(charge)
        elif charge.charge_class == ChargeClass.ADJUSTMENT:
            adjustments.append(charge)
        else:
            usage.append(charge)
    discounted = [c for c in (*usage, *adjustments) if c.list_amount is not None]
    discount = sum((c.amount - (c.list_amount or 0) for c in discounted), Decimal(0))
    percents = {p for c in discounted if (p := formatting.discount_percent(c.pricing))}
    percent = formatting.percent(percents.pop(), locale) if len(percents) == 1 else ""
    usage_charges = usage + adjustments
    billed = [*usage_charges, *top_ups]
    net_total = statement.net_total
    return {
        "usage_charges": usage_charges,
        "adjustments": adjustments,
        "discount": discount if discounted else None,
        "discount_label": f"Discount {percent}" if percent else "Discount",
        "top_ups": top_ups,
        "corrections": corrections,
        "taxes": taxes,
        "credits": credits,
        "usage_subtotal": sum((c.amount for c in usage_charges), Decimal(0)),
        "period_subtotal": sum((c.amount for c in billed), Decimal(0)),
        "net_total": net_total,
        "gross_total": statement.gross_total,
        "before_credit": statement.total - sum((c.amount for c in credits), Decimal(0)),
    }


def shown_amount(charge: StatementCharge) -> Decimal:
    """What a charge's row prints: its list amount when the discount is a row of its own."""
    return charge.list_amount if charge.list_amount is not None else charge.amount


def _lines(text: str) -> list[str]:
    """The non-blank lines of a multi-line address."""
    return [line.strip() for line in text.splitlines() if line.strip()]
