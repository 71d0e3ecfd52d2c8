"""The link guard's test grid: destinations built from prefixes × hosts, plus schemes and relative
links, each written into every Markdown and HTML form a renderer turns into a link or an image.

Each destination carries what a browser does with it, written down here by hand from the WHATWG
URL standard (``keep``: it stays on the rendering page's host or goes to an allowlisted host over
http(s); ``remove``: anything else). ``tests/e2e/test_link_guard_chromium.py`` checks every one of
these labels, and the guard's own verdict, against Chromium's ``new URL(href, base)``; the unit
tests check the guard against the labels without a browser. Every destination holds a unique
marker (``M<n>``), so a test can tell whether it survived without parsing URLs itself.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

BASE = "https://agentstack.invalid/"
ALLOWED = ("ok.com", "bücher.example")
KEEP, REMOVE = "keep", "remove"

# (host as written, where the browser goes: KEEP = an allowlisted host, REMOVE = any other)
HOSTS: list[tuple[str, str]] = [
    ("ok.com", KEEP),
    ("a.ok.com", KEEP),  # subdomain of an allowlisted host
    ("OK.COM", KEEP),
    ("ok.com.", KEEP),  # trailing dot
    ("ok%2Ecom", KEEP),  # percent-encoded dot: the host parser decodes it
    ("bücher.example", KEEP),  # IDN, allowlisted as written
    ("xn--bcher-kva.example", KEEP),  # the same host in punycode
    ("BÜCHER.example", KEEP),  # IDNA maps case
    ("ok\u3002com", KEEP),  # ideographic full stop: IDNA maps it to "."
    ("ok\uff0ecom", KEEP),  # fullwidth full stop
    ("evil.com@ok.com", KEEP),  # userinfo on an allowlisted host
    ("evil.com", REMOVE),
    ("EVIL.COM", REMOVE),
    ("evil%2Ecom", REMOVE),
    ("evil%2ecom", REMOVE),
    ("ok.com.evil.com", REMOVE),
    ("evilok.com", REMOVE),
    ("ok.com@evil.com", REMOVE),  # userinfo: the host is evil.com
    ("ok.com:443@evil.com", REMOVE),
    ("evil.com\\@ok.com", REMOVE),  # special schemes read "\" as "/": host evil.com, path /@ok.com
    ("evil.com#@ok.com", REMOVE),
    ("evil.com?@ok.com", REMOVE),
    ("\u043ek.com", REMOVE),  # Cyrillic "о" + "k.com": a homograph, another host (punycode)
    ("evil\u3002com", REMOVE),
    ("127.0.0.1", REMOVE),
    ("0x7f.1", REMOVE),  # IPv4 in hex: 127.0.0.1
    ("[::1]", REMOVE),
    ("evil.com%00ok.com", REMOVE),  # a forbidden code point: the URL is invalid
]

# (prefix, True when the browser reads what follows as the host; False when it stays a path
# on the base's host)
PREFIXES: list[tuple[str, bool]] = [
    ("https://", True),
    ("http://", True),
    ("HTTPS://", True),
    ("//", True),  # protocol-relative
    ("/\\", True),  # "\" is "/" in special schemes
    ("\\\\", True),
    ("\\/", True),
    ("https:/\\", True),
    ("https:\\\\", True),
    ("https:///", True),  # extra slashes are skipped
    ("ht\ttps://", True),  # tabs and newlines are removed anywhere in the URL
    ("ht\ntps://", True),
    ("/\t/", True),
    (" https://", True),  # leading spaces and C0 controls are stripped
    ("\x01https://", True),
    ("http:", True),  # another scheme than the base's: the host follows
    ("https:", False),  # the base's own scheme with no slashes: a relative path
    ("/%2F", False),  # encoded slashes are not slashes
    ("%2F%2F", False),
    ("/./", False),
    ("./", False),
]

# Whole destinations (no host axis): schemes a browser must never get, and relative links.
OTHERS: list[tuple[str, str]] = [
    ("javascript:alert('{m}')", REMOVE),
    ("JaVaScRiPt:alert('{m}')", REMOVE),
    ("java\tscript:alert('{m}')", REMOVE),
    ("java\nscript:alert('{m}')", REMOVE),
    ("  javascript:alert('{m}')", REMOVE),
    ("data:text/html,<script>alert('{m}')</script>", REMOVE),
    ("data:image/png;base64,{m}AAAA", REMOVE),
    ("vbscript:msgbox('{m}')", REMOVE),
    ("file:///etc/passwd?{m}", REMOVE),
    ("mailto:x@evil.com?body={m}", REMOVE),
    ("ftp://ok.com/{m}", REMOVE),  # allowlisted host, but not http(s)
    ("blob:https://evil.com/{m}", REMOVE),
    ("ws://ok.com/{m}", REMOVE),
    ("about:blank#{m}", REMOVE),
    ("/docs/{m}", KEEP),
    ("#{m}", KEEP),
    ("?q={m}", KEEP),
    ("{m}.png", KEEP),
    ("../{m}", KEEP),
    ("https://agentstack.invalid/{m}", KEEP),  # the rendering page's own host
]


# markdown-it's link normaliser punycodes a host without case folding, so a Markdown renderer
# would send "BÜCHER.example" to xn--BCHER-2pa.example, another host: in Markdown the guard
# removes it (it judges the normalised reading too); as raw HTML the browser folds case and it stays.
NORMALIZED_ELSEWHERE = ("BÜCHER.example",)
HTML_FORMS = ("html_img", "html_a", "html_srcset", "html_block_img")


@dataclass(frozen=True)
class Case:
    n: int
    href: str
    expected: str
    marker: str

    def __str__(self) -> str:
        return f"{self.n}:{self.href!r}"

    def expected_in(self, form: str) -> str | None:
        """The label for ``form``; None where the form's renderer reads the destination otherwise."""
        if form not in HTML_FORMS and any(h in self.href for h in NORMALIZED_ELSEWHERE):
            return None
        return self.expected


def cases() -> list[Case]:
    out: list[Case] = []
    for prefix, reads_host in PREFIXES:
        for host, where in HOSTS:
            n = len(out)
            marker = f"M{n}X"
            out.append(Case(n, f"{prefix}{host}/{marker}", where if reads_host else KEEP, marker))
    for template, where in OTHERS:
        n = len(out)
        marker = f"M{n}X"
        out.append(Case(n, template.format(m=marker), where, marker))
    return out


def _md_destination(href: str) -> str:
    """``href`` as an angle-bracket Markdown destination (entities for what cannot appear raw)."""
    special = {"<": "&lt;", ">": "&gt;", "\n": "&#10;", "&": "&amp;", "\x01": "&#1;", "\\": "\\\\"}
    return "<" + "".join(special.get(c, c) for c in href) + ">"


def _attr(href: str) -> str:
    return html.escape(href, quote=True)


FORMS = ["inline_link", "inline_image", "reference_link", "reference_image", "autolink", "html_img", "html_a",
         "html_srcset", "bare", "quoted_link", "table_link", "list_image", "html_block_img"]


def render(case: Case, form: str) -> str | None:
    """The answer text carrying ``case.href`` in ``form``; None when the form cannot carry it."""
    href, dest = case.href, _md_destination(case.href)
    simple = not any(c in href for c in " \t\n\x01<>")
    if form == "inline_link":
        return f"Read [the docs]({dest}) now."
    if form == "inline_image":
        return f"Look: ![chart]({dest}) here."
    if form == "reference_link":
        return f"See [the source][r{case.n}] for more.\n\n[r{case.n}]: {dest}\n"
    if form == "reference_image":
        return f"![pixel][p{case.n}]\n\n[p{case.n}]: {dest} \"t\"\n"
    if form == "autolink":
        scheme = href.split(":", 1)[0]
        if not simple or ":" not in href or not scheme.isascii() or not scheme[:1].isalpha() or len(scheme) < 2:
            return None
        return f"Open <{href}> please."
    if form == "html_img":
        return f'Inline <img src="{_attr(href)}" alt="x"> image.'
    if form == "html_a":
        return f'Inline <a href="{_attr(href)}">link</a> here.'
    if form == "html_srcset":
        if not simple or "," in href:
            return None
        return f'<img srcset="{_attr(href)} 2x, /ok.png 1x" alt="y">'
    if form == "bare":
        return f"Visit {href} today." if simple else None
    if form == "quoted_link":
        return f"> Quoted [here]({dest}) it is.\n> More."
    if form == "table_link":
        return f"| a | b |\n|---|---|\n| [cell]({dest}) | z |\n"
    if form == "list_image":
        return f"- one\n- two ![i]({dest})\n- three\n"
    if form == "html_block_img":
        return f'<div>\n<p>block</p>\n<img src="{_attr(href)}">\n</div>\n'
    raise ValueError(form)


def renderer():
    """A lax Markdown renderer: raw HTML on, bare URLs linkified (fuzzy, as markdown-it's linkify
    option does), every destination accepted and left as written."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "linkify": True}).enable(["table", "strikethrough", "linkify"])
    md.validateLink = lambda url: True
    md.normalizeLink = lambda url: url
    return md


def url_attributes(rendered_html: str) -> list[str]:
    """Every href, src and srcset value in rendered HTML, as the browser's tokenizer reads them."""
    from html.parser import HTMLParser

    values: list[str] = []

    class Reader(HTMLParser):
        def handle_starttag(self, tag, attrs):
            values.extend(v or "" for k, v in attrs if k in ("href", "src", "srcset", "action", "poster",
                                                              "background", "data", "formaction", "ping"))

        handle_startendtag = handle_starttag

    Reader(convert_charrefs=True).feed(rendered_html)
    return values


def linked(case: Case, form: str, rendered_html: str) -> bool:
    """Did the renderer make the case's destination a link or an image (so the guard has work)?
    For bare URLs, only when the linkifier took the whole destination (it may take a piece of it,
    a different URL, which the guard then judges on its own)."""
    values = url_attributes(rendered_html)
    if form == "bare":
        return any(v in (case.href, "http://" + case.href) for v in values)
    return any(case.marker in v for v in values)
