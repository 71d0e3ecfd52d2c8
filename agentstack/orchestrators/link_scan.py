"""Every place in a Markdown answer that a renderer turns into a link, an image or raw HTML, with
its position in the text: found by a CommonMark parser (``markdown-it-py``, with GFM tables and
raw HTML on), not by regexes.

Found: inline links and images (``[t](u)``, ``![a](u)``, ``[t](<u>)``), reference-style links and
their definitions (``[t][r]`` … ``[r]: u``; every definition is reported, so one whose host is
refused can be removed and the references to it fall back to plain text), autolinks (``<u>``),
raw HTML tags inline and in HTML blocks (judged as tags: ``<img src>``, ``<a href>``, ``srcset``,
anything else), and bare URLs as ``linkify-it`` (the linkifier markdown-it renderers use) finds
them: with a scheme (``https://``, ``//``, ``mailto:``…), starting ``www.``, or a bare domain
followed by a path, query or fragment (``evil.com/x?d=…``). A bare domain with nothing after it
(``config.py``, ``example.com``) is left alone: it is a name the reader sees and carries no data.

The parser is configured like a lax renderer: it accepts every destination (no scheme
filtering) and does not percent-encode it, so the policy sees what the least careful renderer
would put in ``href``; the policy also judges markdown-it's normalised form.

Positions are offsets into the text given. Constructs inside containers (block quotes, lists,
tables) are located by aligning the block's content with the source; one that cannot be located
exactly is reported with ``exact=False`` (the caller then removes more).

This module knows nothing about allowlists or streams.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.helpers import parseLinkLabel

_KEY = "_agentstack_links"
INLINE_KINDS = ("link", "image", "autolink", "html_inline", "backticks")


@dataclass
class Construct:
    kind: str  # link | image | autolink | email | html | definition | bare
    start: int | None  # offsets in the scanned text; None when it could not be located
    end: int | None
    hrefs: list[str] = field(default_factory=list)  # readings of the destination, for the policy
    tag: str | None = None  # raw HTML: the tag's text, judged as a tag
    replacement: str = ""  # what stands in its place when it is refused
    exact: bool = True


@dataclass
class Scan:
    constructs: list[Construct]
    block_starts: list[int]  # offsets where each top-level block begins
    open_tag: int | None = None  # where an unterminated tag at the very end of a raw HTML block starts


@lru_cache(maxsize=1)
def _parsers() -> tuple[MarkdownIt, MarkdownIt]:
    md = MarkdownIt("commonmark", {"html": True, "inline_definitions": True}).enable(["table", "strikethrough"])
    strict = MarkdownIt("commonmark")
    md.validateLink = lambda url: True  # type: ignore[method-assign]  # report every destination
    md.normalizeLink = lambda url: url  # type: ignore[method-assign]  # as a lax renderer would emit it
    for name in INLINE_KINDS:
        md.inline.ruler.at(name, _recording(name, _rule(md, name)))
    md.core.ruler.at("inline", _inline_with_context)
    return md, strict


@lru_cache(maxsize=1)
def linkifier() -> Any:
    from linkify_it import LinkifyIt

    return LinkifyIt(options={"fuzzy_email": False})


def _rule(md: MarkdownIt, name: str) -> Any:
    return next(r.fn for r in md.inline.ruler.__rules__ if r.name == name)


def _inline_with_context(state: Any) -> None:
    """markdown-it's core ``inline`` rule, telling the recording rules which block they are in."""
    for token in state.tokens:
        if token.type == "inline":
            if token.children is None:
                token.children = []
            state.env[_KEY]["block"] = token
            state.md.inline.parse(token.content, state.md, state.env, token.children)
    state.env[_KEY]["block"] = None


def _recording(name: str, rule: Any) -> Any:
    def record(state: Any, silent: bool) -> bool:
        start, count = state.pos, len(state.tokens)
        ok = rule(state, silent)
        ctx = state.env.get(_KEY)
        if ok and not silent and ctx and ctx.get("block") is not None and state.src is ctx["block"].content:
            label = None
            if name in ("link", "image"):
                opener = start if name == "link" else start + 1
                pos, posmax = state.pos, state.posMax
                state.posMax = len(state.src)
                end = parseLinkLabel(state, opener, name == "link")
                state.pos, state.posMax = pos, posmax
                label = state.src[opener + 1:end] if end > opener else ""
            ctx["found"].append((ctx["block"], name, start, state.pos, state.tokens[count:], label))
        return ok

    return record


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts.extend(i + 1 for i, c in enumerate(text) if c == "\n")
    return starts


def _align(content: str, text: str, start: int) -> list[int]:
    """Offsets in ``text`` of each character of ``content``, which a block rule made from the
    source from ``start`` on by dropping container markers and indentation (greedy alignment)."""
    out, j, n = [], start, len(text)
    for ch in content:
        while j < n and text[j] != ch:
            j += 1
        out.append(min(j, n - 1) if n else 0)
        j += 1
    return out


class _Mapper:
    """Content offsets of each block → offsets in the text, computed on first use."""

    def __init__(self, text: str):
        self.text = text
        self.lines = _line_starts(text)
        self.cursor = 0
        self.maps: dict[int, list[int]] = {}

    def block(self, token: Any) -> list[int]:
        key = id(token)
        if key not in self.maps:
            first = self.lines[token.map[0]] if token.map and token.map[0] < len(self.lines) else self.cursor
            mapping = _align(token.content, self.text, max(first, self.cursor))
            self.maps[key] = mapping
            if mapping:
                self.cursor = max(self.cursor, mapping[-1] + 1)
        return self.maps[key]

    def span(self, token: Any, start: int, end: int) -> tuple[int, int, bool]:
        mapping = self.block(token)
        if not mapping or end <= start or end > len(mapping):
            return 0, 0, False
        s, e = mapping[start], mapping[end - 1] + 1
        return s, e, self.text[s:e] == token.content[start:end]


def scan(text: str) -> Scan:
    md, strict = _parsers()
    env: dict[str, Any] = {_KEY: {"found": [], "block": None}}
    tokens = md.parse(text, env)
    mapper = _Mapper(text)
    found: list[Construct] = []
    open_tags: list[int] = []
    lines = mapper.lines
    block_starts = [lines[t.map[0]] for t in tokens
                    if t.level == 0 and t.map and t.nesting >= 0 and t.map[0] < len(lines)]
    # The mapper's cursor moves forward, so blocks are mapped in document order.
    by_block: dict[int, list[tuple[Any, ...]]] = {}
    for rec in env[_KEY]["found"]:
        by_block.setdefault(id(rec[0]), []).append(rec)
    for token in tokens:
        if token.type == "inline":
            found.extend(_inline_constructs(token, by_block.get(id(token), []), mapper, strict))
        elif token.type == "definition":
            found.append(_definition(token, text, lines, strict))
        elif token.type == "html_block":
            found.extend(_html_block(token, mapper, open_tags))
    return Scan(found, block_starts, open_tags[-1] if open_tags else None)


def _hrefs(href: str, strict: MarkdownIt) -> list[str]:
    """The readings of one destination a renderer may put in ``href``: markdown-it's (which leaves
    references to control characters undecoded), the CommonMark spec's (which decodes them), and
    markdown-it's normalised form (percent-encoded, punycode)."""
    readings = [href]
    if "&" in href:
        readings.append(html.unescape(href))
    try:
        readings.append(strict.normalizeLink(href))
    except Exception:  # noqa: BLE001  (a destination the normaliser chokes on is judged as given)
        pass
    return list(dict.fromkeys(readings))


def _inline_constructs(token: Any, records: list[tuple[Any, ...]], mapper: _Mapper,
                       strict: MarkdownIt) -> list[Construct]:
    out: list[Construct] = []
    taken: list[tuple[int, int]] = []  # content spans no bare URL can sit in
    for _, name, start, end, pushed, label in records:
        taken.append((start, end))
        if name == "backticks":
            continue
        s, e, exact = mapper.span(token, start, end)
        if name == "html_inline":
            out.append(Construct("html", s, e, tag=token.content[start:end], exact=exact))
        elif name == "autolink":
            opener = next((t for t in pushed if t.type == "link_open"), None)
            href = str(opener.attrGet("href") or "") if opener is not None else ""
            inner = token.content[start + 1:end - 1]
            email = href.startswith("mailto:") and not inner.lower().startswith("mailto:")
            out.append(Construct("email" if email else "autolink", s, e, _hrefs(href, strict),
                                 replacement=inner if email else "", exact=exact))
        else:
            attr = "href" if name == "link" else "src"
            tok = next((t for t in pushed if t.attrGet(attr) is not None), None)
            href = str(tok.attrGet(attr)) if tok is not None else ""
            out.append(Construct(name, s, e, _hrefs(href, strict), replacement=label if name == "link" else "",
                                 exact=exact))
    out.extend(_bare_urls(token, taken, mapper, strict))
    return out


def counts_as_link(match: Any) -> bool:
    if match.schema:
        return True
    raw = match.raw.lower()
    if raw.startswith("www."):
        return True
    host_end = len(raw)
    for sep in "/?#":
        idx = raw.find(sep)
        if idx != -1:
            host_end = min(host_end, idx)
    return host_end < len(raw) and len(raw) > host_end + 1


def _bare_urls(token: Any, taken: list[tuple[int, int]], mapper: _Mapper, strict: MarkdownIt) -> list[Construct]:
    linkify = linkifier()
    content = token.content
    out: list[Construct] = []
    located: list[str] = []
    if linkify.pretest(content):
        for m in linkify.match(content) or []:
            if not counts_as_link(m) or any(a < m.last_index and m.index < b for a, b in taken):
                continue
            s, e, exact = mapper.span(token, m.index, m.last_index)
            out.append(Construct("bare", s, e, _hrefs(m.url, strict), replacement="", exact=exact))
            located.append(m.url)
    # What a renderer linkifies is the decoded text (escapes and entities resolved), outside links.
    for text in _plain_runs(token.children or []):
        if not linkify.pretest(text):
            continue
        for m in linkify.match(text) or []:
            if not counts_as_link(m):
                continue
            if m.url in located:
                located.remove(m.url)
                continue
            out.append(Construct("bare", None, None, _hrefs(m.url, strict), exact=False))
    return out


def _plain_runs(children: list[Any]) -> list[str]:
    runs, current, depth = [], [], 0
    for child in children:
        if child.type == "link_open":
            depth += 1
        elif child.type == "link_close":
            depth = max(0, depth - 1)
        if child.type in ("text", "text_special") and depth == 0:
            current.append(child.content)
        else:
            if current:
                runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    return runs


def _definition(token: Any, text: str, lines: list[int], strict: MarkdownIt) -> Construct:
    first, last = token.map[0], token.map[1]
    start = lines[first] if first < len(lines) else len(text)
    bracket = text.find("[", start)
    start = bracket if bracket != -1 else start
    end = (lines[last] - 1) if last < len(lines) else len(text)
    return Construct("definition", start, max(start, end), _hrefs(str(token.meta.get("url", "")), strict))


def _html_block(token: Any, mapper: _Mapper, open_at: list[int]) -> list[Construct]:
    """The tags of a raw HTML block. A tag the block ends inside is judged as the rest of the block
    (see below), and its start is added to ``open_at`` when nothing follows the block yet."""
    out: list[Construct] = []
    content = token.content
    i = content.find("<")
    while i != -1 and i < len(content) - 1:
        end = tag_end(content, i)
        if end is None:  # runs to the end of the block. A browser drops an unterminated tag only at the end
            # of the document; here rendered text follows (an API client's page), whose next ``>`` closes
            # it, so the rest of the block is judged as the tag
            if content[i + 1].isalpha():
                stop = max(i + 2, len(content.rstrip()))  # the block's own line end stays
                s, e, exact = mapper.span(token, i, stop)
                out.append(Construct("html", s, e, tag=content[i:stop], exact=exact))
                if e and not mapper.text[e:].strip():
                    open_at.append(s)  # nothing follows yet: a stream holds it back (LinkGuard._cut)
            break
        if content[i + 1].isalpha():
            s, e, exact = mapper.span(token, i, end)
            out.append(Construct("html", s, e, tag=content[i:end], exact=exact))
        i = content.find("<", max(end, i + 1))
    return out


def tag_end(text: str, i: int) -> int | None:
    """End (exclusive) of the tag, comment or declaration starting with ``<`` at ``i``, read the
    way a browser's tokenizer reads it; ``i + 1`` when ``<`` starts none of them; None when the
    text ends first."""
    n = len(text)
    if i + 1 >= n:
        return None
    nxt = text[i + 1]
    if text.startswith("<!--", i):
        close = text.find("-->", i + 4)
        if text.startswith("<!-->", i) or text.startswith("<!--->", i):
            return i + (5 if text.startswith("<!-->", i) else 6)
        return None if close == -1 else close + 3
    if nxt in "!?":
        close = text.find(">", i + 2)
        return None if close == -1 else close + 1
    if nxt == "/":
        if i + 2 >= n:
            return None
        if not text[i + 2].isalpha():
            return i + 1
        close = text.find(">", i + 2)
        return None if close == -1 else close + 1
    if not nxt.isalpha():
        return i + 1
    j = i + 2
    quote = ""
    in_value = False
    while j < n:
        c = text[j]
        if quote:
            if c == quote:
                quote, in_value = "", False
        elif c == ">":
            return j + 1
        elif c == "=":
            in_value = True
        elif in_value and c in "\"'":
            quote = c
        elif in_value and c not in " \t\n\r\f":
            in_value = False  # an unquoted value: quotes inside it are literal
            while j + 1 < n and text[j + 1] not in " \t\n\r\f>":
                j += 1
        j += 1
    return None
