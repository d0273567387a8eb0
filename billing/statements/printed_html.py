"""What WeasyPrint is handed: HTML without whitespace between block tags, images from memory."""

from __future__ import annotations

import itertools
import re
import threading
from typing import Any

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
