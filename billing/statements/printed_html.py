"""What WeasyPrint is handed: HTML without whitespace between block tags, its tree built by a C
parser, images from memory."""

from __future__ import annotations

import itertools
import re
import threading
from typing import Any
from xml.etree import ElementTree

# Elements that are blocks, table parts or document-level in the shipped stylesheet and the
# user-agent one. A whitespace-only text node beside one of them starts or ends a line (or
# sits between table parts) and is dropped by CSS whitespace processing under `white-space:
# normal` or `nowrap`, the only values the shipped stylesheet uses: removing it changes no
# pixel and saves WeasyPrint the parsing, styling and box building of that node.
BLOCK_TAGS = frozenset(
    {
        "html",
        "head",
        "meta",
        "title",
        "link",
        "body",
        "div",
        "p",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "section",
        "header",
        "footer",
        "main",
        "article",
        "aside",
        "nav",
        "ul",
        "ol",
        "li",
        "dl",
        "dt",
        "dd",
        "table",
        "caption",
        "colgroup",
        "col",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "td",
        "th",
        "hr",
    }
)
# Elements whose whitespace is content, left exactly as written.
_VERBATIM = re.compile(
    r"(<(pre|textarea|script|style|svg|math)\b.*?</\2\s*>)", re.IGNORECASE | re.DOTALL
)
# A tag, the whitespace-only text after it and (looked at, not consumed) the next tag's name.
_GAP = re.compile(r"(<(/?)([a-zA-Z][a-zA-Z0-9]*)\b[^<>]*>)(\s+)(?=<(/?)([a-zA-Z][a-zA-Z0-9]*))")

MEMORY_SCHEME = "billing-memory"

# The WeasyPrint release `html_document` was checked against (tests/unit/test_xhtml_tree.py and
# the pixel test): it builds WeasyPrint's HTML object around its own tree, setting what that
# release's HTML.__init__ sets after parsing. Under any other release every document is parsed
# by WeasyPrint itself.
CHECKED_WEASYPRINT = "70.0"
# A tag holding a tab, newline or carriage return: inside an attribute value XML turns each into
# a space where HTML keeps it (a payment link may hold one), so such a document is left to the
# HTML parser. Jinja escapes "<" and ">" in every value, so a match is a whole tag.
_TAG_WITH_LINE_BREAK = re.compile(r"<[^<>]*[\t\n\r][^<>]*>")


def _close_gap(match: re.Match[str]) -> str:
    if match[3].lower() in BLOCK_TAGS or match[6].lower() in BLOCK_TAGS:
        return match[1]
    return match[0]


def without_block_whitespace(html: str) -> str:
    """`html` without the whitespace-only text between two tags when either is a block tag;
    text, attributes and the inside of <pre>, <textarea>, <script>, <style>, <svg> and <math>
    are kept as they are. Only for HTML printed with the shipped stylesheet (see BLOCK_TAGS)."""
    parts = _VERBATIM.split(html)
    # split() with two groups yields: text, whole verbatim element, its tag name, text, ...
    kept = []
    for index, part in enumerate(parts):
        position = index % 3
        if position == 0:
            kept.append(_GAP.sub(_close_gap, part))
        elif position == 1:
            kept.append(part)
    return "".join(kept)


def xhtml_tree(html: str) -> ElementTree.Element | None:
    """The tree of `html` built by expat, the C XML parser, when `html` is well-formed XML and no
    tag holds a line break; else None.

    For the shipped statement and credit-note templates printed through `without_block_whitespace`
    it is the tree tinyhtml5, WeasyPrint's pure-Python HTML5 parser, builds (without namespaces),
    in a twentieth of the time: the templates write what HTML parsing would imply (<tbody> in
    every table, void elements closed with "/>", the DOCTYPE in capitals), Jinja escapes user
    data to the five references XML knows, and the whitespace where the two parsers differ (around
    <head> and <body>) is gone. tests/unit/test_xhtml_tree.py compares the two trees."""
    if _TAG_WITH_LINE_BREAK.search(html):
        return None
    try:
        # The text is our templates' output, user data escaped: it declares no entity or DTD.
        return ElementTree.fromstring(html)  # noqa: S314
    except (SyntaxError, ValueError):  # not well-formed (ParseError), or lone surrogates
        return None


def html_document(html: str, base_url: str, url_fetcher: Any) -> Any:
    """WeasyPrint's HTML document of `html`, its tree built by `xhtml_tree` under the checked
    WeasyPrint release; parsed by WeasyPrint (tinyhtml5) under any other release or when
    `xhtml_tree` cannot build it. Only for HTML `without_block_whitespace` has printed."""
    import weasyprint

    tree = xhtml_tree(html) if weasyprint.__version__ == CHECKED_WEASYPRINT else None
    if tree is None:
        return weasyprint.HTML(string=html, base_url=base_url, url_fetcher=url_fetcher)
    return _document_of_tree(tree, base_url, url_fetcher)


def _document_of_tree(tree: ElementTree.Element, base_url: str, url_fetcher: Any) -> Any:
    """An HTML object as WeasyPrint 70.0's HTML(string=..., base_url=..., url_fetcher=...) makes
    it, around `tree` instead of the tree tinyhtml5 would parse."""
    import cssselect2  # type: ignore[import-untyped]
    from weasyprint import HTML, _find_base_url
    from weasyprint.urls import ensure_url

    document = HTML.__new__(HTML)
    document.base_url = _find_base_url(tree, ensure_url(base_url))
    document.url_fetcher = url_fetcher
    document.media_type = "print"
    document.wrapper_element = cssselect2.ElementWrapper.from_html_root(tree, content_language=None)
    document.etree_element = document.wrapper_element.etree_element
    return document


class MemoryImages:
    """Images a document names by a `billing-memory:` URL, served from bytes in this process.

    Each URL is used once (`new_url` counts), so WeasyPrint's image cache, keyed by URL, never
    hands one statement's chart to another; `forget` drops the bytes after the print."""

    def __init__(self) -> None:
        self._images: dict[str, bytes] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def new_url(self, name: str) -> str:
        """A URL no other document of this process uses, ending in `name`."""
        return f"{MEMORY_SCHEME}:{next(self._numbers)}/{name}"

    def put(self, url: str, content: bytes) -> None:
        with self._lock:
            self._images[url] = content

    def get(self, url: str) -> bytes | None:
        return self._images.get(url)

    def forget(self, url: str) -> None:
        with self._lock:
            self._images.pop(url, None)


def memory_fetcher(images: MemoryImages, fallback: Any) -> Any:
    """A WeasyPrint URL fetcher that serves `images` by their URL and hands every other URL to
    `fallback` (the assets-only fetcher, which refuses anything outside the asset folders)."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class MemoryFirstFetcher(URLFetcher):  # type: ignore[misc]
        def fetch(self, url: str, headers: Any = None) -> Any:
            content = images.get(url) if url.startswith(MEMORY_SCHEME + ":") else None
            if content is not None:
                return URLFetcherResponse(url, content, {"Content-Type": "image/svg+xml"})
            return fallback.fetch(url, headers)

    return MemoryFirstFetcher(allowed_protocols=("file",), allow_redirects=False)
