"""Where a link, an image or an HTML attribute in an answer points, decided the way a browser would.

A URL is resolved against a base URL with a WHATWG URL parser (``ada-url``, the parser Node.js
uses; the end-to-end tests check its verdicts against Chromium's ``new URL(href, base)``), so
``/\\evil.com``, ``https:/\\evil.com``, ``ht<TAB>tps://evil.com``, ``https://ok.com@evil.com``,
``https://evil%2Ecom`` and IDN hosts all land on the host a browser would contact. A destination
is allowed only when it resolves to ``http``/``https`` on the base URL's own host (a relative
link: it stays on whatever page renders the answer) or on an allowlisted host (or a subdomain
of one), or is a plain ``mailto:`` address (no ``?subject=``/``?body=``: nothing the reader does
not see). Everything else, including ``javascript:``, ``data:``, ``file:``, ``mailto:`` with a
query, and URLs the parser rejects, is not.

The base URL is ``https://agentstack.invalid/`` by default: a host that can never resolve
(RFC 2606), standing for "the page that renders the answer", whose real address the guard does
not know.

Raw HTML passes only as a small set of formatting tags with harmless attributes, plus ``<a href>``
and ``<img src/srcset>`` whose URLs pass the check above; any other tag or attribute (``style``,
``on*``, ``<base>``, ``<iframe>``, ``<form>``, ``<svg>``, ...) fails.

This module knows nothing about Markdown or streams; ``link_scan.py`` finds the URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser

from ada_url import URL

from agentstack.errors import ConfigError

BASE_URL = "https://agentstack.invalid/"
SAFE_SCHEMES = ("http:", "https:")

# Tags a Markdown answer may carry as raw HTML, with the attributes each may have (plus GLOBAL).
GLOBAL_ATTRS = frozenset({"title", "lang", "dir", "align"})
TAG_ATTRS: dict[str, frozenset[str]] = {
    **{t: frozenset() for t in ("b", "i", "em", "strong", "code", "pre", "kbd", "samp", "var", "sub", "sup", "br",
                                "hr", "p", "div", "span", "blockquote", "ul", "li", "dl", "dt", "dd", "table",
                                "thead", "tbody", "tfoot", "tr", "caption", "h1", "h2", "h3", "h4", "h5", "h6",
                                "del", "ins", "s", "u", "mark", "small", "abbr", "q", "figure", "figcaption",
                                "summary", "wbr", "tt", "strike", "big", "center")},
    "ol": frozenset({"start", "type", "reversed"}),
    "th": frozenset({"colspan", "rowspan", "scope"}),
    "td": frozenset({"colspan", "rowspan"}),
    "details": frozenset({"open"}),
    "a": frozenset({"href"}),
    "img": frozenset({"src", "srcset", "alt", "width", "height"}),
}
URL_ATTRS = frozenset({"href", "src"})


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    host: str  # the host the browser would contact, or the scheme / "invalid" when there is none
    reason: str  # "relative", "allowlisted", "mailto", "host", "scheme", "invalid", "tag", "attribute"


def normalize_host(entry: str) -> str:
    """An allowlist entry (``docs.example.org``, ``bücher.example``, ``[::1]``) as the host a
    browser would parse it to: lower case, punycode, no trailing dot."""
    raw = entry.strip()
    try:
        url = URL(f"https://{raw}/")
    except ValueError:
        raise ConfigError(f"allowed link host {entry!r} is not a valid host name",
                          fix="list bare host names such as docs.example.org (no scheme, path or port)") from None
    if url.pathname != "/" or url.port or url.username or url.search or not url.hostname:
        raise ConfigError(f"allowed link host {entry!r} must be a bare host name",
                          fix="list bare host names such as docs.example.org (no scheme, path or port)")
    return url.hostname.rstrip(".")


class LinkPolicy:
    """Judges URLs and HTML tags against an allowlist of hosts."""

    def __init__(self, allowed_hosts: tuple[str, ...] | list[str] = (), base_url: str = BASE_URL):
        self.allowed = tuple(normalize_host(h) for h in allowed_hosts if h.strip())
        self.base_url = base_url
        self.base_host = URL(base_url).hostname.rstrip(".")

    def judge(self, href: str) -> Verdict:
        return _judge(href, self.base_url, self.base_host, self.allowed)

    def judge_all(self, hrefs: list[str]) -> Verdict:
        """The first refusal among ``hrefs`` (several readings of one destination), else the
        verdict of the first."""
        verdicts = [self.judge(h) for h in hrefs]
        return next((v for v in verdicts if not v.allowed), verdicts[0])

    def judge_tag(self, tag_text: str) -> Verdict:
        """A raw HTML tag (``<img src=...>``, ``</a>``, ``<!-- -->``) as a browser would read it."""
        tag = parse_tag(tag_text)
        if tag is None:  # end tags, comments, declarations, processing instructions: nothing to fetch
            return Verdict(True, "", "relative")
        name, attrs = tag
        allowed_attrs = TAG_ATTRS.get(name)
        if allowed_attrs is None:
            return Verdict(False, f"<{name}>", "tag")
        verdict = Verdict(True, "", "relative")
        for attr, value in attrs:
            if attr not in allowed_attrs and attr not in GLOBAL_ATTRS:
                return Verdict(False, f"<{name} {attr}>", "attribute")
            urls = srcset_urls(value or "") if attr == "srcset" else [value or ""] if attr in URL_ATTRS else []
            for url in urls:
                verdict = self.judge(url)
                if not verdict.allowed:
                    return verdict
        return verdict


@lru_cache(maxsize=4096)
def _judge(href: str, base_url: str, base_host: str, allowed: tuple[str, ...]) -> Verdict:
    try:
        url = URL(href, base_url)
    except ValueError:
        return Verdict(False, "invalid", "invalid")
    if url.protocol == "mailto:" and not url.search:  # an address the reader sees, with nothing filled in
        return Verdict(True, "mailto:", "mailto")
    if url.protocol not in SAFE_SCHEMES:
        return Verdict(False, url.protocol, "scheme")
    host = url.hostname.rstrip(".")
    if host == base_host:
        return Verdict(True, host, "relative")
    if any(host == a or host.endswith("." + a) for a in allowed):
        return Verdict(True, host, "allowlisted")
    return Verdict(False, host, "host")


def srcset_urls(value: str) -> list[str]:
    """The URLs of an ``srcset`` attribute, split as the HTML standard's parser splits them
    (candidates separated by commas; a URL may itself contain commas, but not end with one)."""
    urls, pos, n = [], 0, len(value)
    space = " \t\n\r\f"
    while pos < n:
        while pos < n and (value[pos] in space or value[pos] == ","):
            pos += 1
        if pos >= n:
            break
        start = pos
        while pos < n and value[pos] not in space:
            pos += 1
        url = value[start:pos]
        if url.endswith(","):
            urls.append(url.rstrip(","))
            continue
        urls.append(url)
        depth = 0  # skip the descriptors, up to a comma outside parentheses
        while pos < n:
            c = value[pos]
            if c == "(":
                depth += 1
            elif c == ")":
                depth = max(0, depth - 1)
            elif c == "," and depth == 0:
                pos += 1
                break
            pos += 1
    return urls


class _TagReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tag: tuple[str, list[tuple[str, str | None]]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.tag is None:
            self.tag = (tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def parse_tag(tag_text: str) -> tuple[str, list[tuple[str, str | None]]] | None:
    """(name, attributes) of an opening tag, with character references decoded as a browser
    decodes them; None for anything else."""
    if not tag_text.startswith("<") or len(tag_text) < 2 or not tag_text[1].isalpha():
        return None
    reader = _TagReader()
    reader.feed(tag_text)
    reader.close()
    if reader.tag is None:  # a tag the stdlib cannot read: judge it by its name alone, refusing attributes
        name = tag_text[1:].split(None, 1)[0].rstrip("/>").lower()
        return (name, [("?", tag_text)])
    return reader.tag
