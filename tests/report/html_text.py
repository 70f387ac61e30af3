"""Reading rendered HTML in tests: every start tag with its attributes, and the visible text."""

from __future__ import annotations

import html as html_lib
import re
from html.parser import HTMLParser


class _Collector(HTMLParser):
    """Every start tag with its attributes, and the text of <script>/<style> blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.raw_blocks: list[str] = []
        self._in_raw = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_raw = tag in ("script", "style")

    def handle_endtag(self, tag):
        self._in_raw = False

    def handle_data(self, data):
        if self._in_raw:
            self.raw_blocks.append(data)


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    return c


def visible_text(html: str) -> str:
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", body))
