"""The link guard on a stream: links, images and raw HTML whose destination the policy refuses are
removed from an answer as it streams (``link_policy.py`` judges, ``link_scan.py`` finds).

Text already sent cannot be taken back, so the guard holds back the end of the stream while later
tokens could still turn it into a link: an open ``[…]`` or ``[…](…``, a ``[label]:`` that may
become a reference definition (held to the next blank line), a ``<`` that may still become a tag
or autolink (by CommonMark's grammar), a word that may be or become a bare URL, a table row that
the next line may turn into a table, a trailing ``!`` or ``\\``. Everything else goes out at once.
A hold that grows past ``HOLD_LIMIT`` characters is ended by escaping its opening character.

Each release is parsed together with the text already sent since the start of the last
top-level block (earlier blocks are closed: nothing later changes them), and every refused
construct that lies in the new text is replaced: a link by its text, an image, a raw tag or a
definition by nothing, a bare URL or autolink by ``[removed]``. The result is parsed again
until it is clean. When a refused construct cannot be edited that way (it begins in text
already sent, or could not be located exactly), the new text is released with its link syntax
escaped as character references and its refused URLs removed; if even that is not clean, it is
replaced by ``[removed]``. So every prefix of what the guard has sent is clean by the parser's
reading, which the tests check for every chunking of a grid of attacks.

This module knows nothing about models or HTTP.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from agentstack.orchestrators.link_policy import LinkPolicy, Verdict
from agentstack.orchestrators.link_scan import Construct, counts_as_link, linkifier, scan

log = logging.getLogger(__name__)

REMOVED = "[removed]"
HOLD_LIMIT = 4000
URL_PREFIXES = ("www.", "https://", "http://", "ftp://", "mailto:")
ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "&#91;", "]": "&#93;", "(": "&#40;", ")": "&#41;",
           "!": "&#33;", "|": "&#124;", '"': "&quot;", "'": "&#39;", "\\": "&#92;", ":": "&#58;"}
OPENER_ESCAPES = {"[": "&#91;", "<": "&lt;"}
BLANK_LINE = re.compile(r"\n[ \t]*\n")
DELIMITER_SO_FAR = re.compile(r"^[ \t|:\-]*$")
LINE_PREFIX = re.compile(r"(?:[ \t]*(?:>|[-+*]|\d{1,9}[.)])[ \t]*)*[ \t]*")  # container markers only
SLOW_CHARS = frozenset("[<:|&")
TRIGGERS = frozenset("[]()<>:|&!\\./?#@")


@dataclass
class LinkStats:
    removed: int = 0
    hosts: list[str] = field(default_factory=list)
    escaped: int = 0  # releases that needed the escaping fallback


@lru_cache(maxsize=1)
def _autolink_patterns() -> tuple[Any, Any]:
    import regex

    from markdown_it.common.html_re import HTML_TAG_RE

    tag = regex.compile(HTML_TAG_RE.pattern)
    auto = regex.compile(r"<(?:[a-zA-Z][a-zA-Z0-9+.\-]{1,31}:[^<>\x00-\x20]*|[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@"
                         r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}"
                         r"[a-zA-Z0-9])?)*)>")
    return tag, auto


def _escaped(t: str, i: int) -> bool:
    n = 0
    while i - n - 1 >= 0 and t[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _skip_ws(t: str, p: int) -> tuple[int, bool]:
    """Position after spaces and at most one line break; True when a blank line ends the run."""
    n, newlines = len(t), 0
    while p < n and t[p] in " \t\n":
        if t[p] == "\n":
            newlines += 1
            if newlines > 1:
                return p, True
        p += 1
    return p, False


def _next(t: str, p: int) -> tuple[int | None, int]:
    """After ``(`` or a destination: (-1, p) a blank line ends it, (None, p) the text ends first,
    (end, p) a ``)`` closes the link at ``end``, (0, p) something else comes at ``p``."""
    p, blank = _skip_ws(t, p)
    if blank:
        return -1, p
    if p >= len(t):
        return None, p
    return (p + 1 if t[p] == ")" else 0), p


def _destination_end(t: str, p: int) -> int | None:
    """After ``](`` at ``p``: where the inline link ends (after its ``)``), -1 when the text can no
    longer be one, None while more text could still complete it."""
    n = len(t)
    end, p = _next(t, p)
    if end != 0:
        return end
    if t[p] == "<":
        q = p + 1
        while q < n and t[q] != ">":
            if t[q] in "\n<":
                return -1
            q += 2 if t[q] == "\\" else 1
        if q >= n:
            return None
        p = q + 1
    else:
        depth, q = 0, p
        while q < n:
            c = t[q]
            if c == "\\":
                q += 2
                continue
            if c in " \t\n" or ord(c) < 0x20:
                break
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    return q + 1
                depth -= 1
            q += 1
        if q >= n:
            return None
        p = q
    end, p = _next(t, p)
    if end != 0:
        return end
    if t[p] not in "\"'(":
        return -1
    close = ")" if t[p] == "(" else t[p]
    q = p + 1
    while q < n and t[q] != close:
        if t[q] == "\n" and BLANK_LINE.match(t, q):
            return -1
        q += 2 if t[q] == "\\" else 1
    if q >= n:
        return None
    end, p = _next(t, q + 1)
    return end if end != 0 else -1


def _close_bracket(t: str, i: int, nested: bool = True) -> int | None:
    """The ``]`` closing the ``[`` at ``i`` (-1 when a blank line comes first), or None."""
    depth, q, n = 1, i + 1, len(t)
    while q < n:
        c = t[q]
        if c == "\\":
            q += 2
            continue
        if c == "\n" and BLANK_LINE.match(t, q):
            return -1
        if c == "[":
            if not nested:
                return -1
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return q
        q += 1
    return None


def _bracket_open(t: str, i: int) -> bool:
    j = _close_bracket(t, i)
    if j is None:
        return True
    if j == -1:
        return False
    after = j + 1
    if after >= len(t):
        return True
    c = t[after]
    if c == "(":
        return _destination_end(t, after + 1) is None
    if c == "[":
        return _close_bracket(t, after, nested=False) is None
    if c == ":" and LINE_PREFIX.fullmatch(t, t.rfind("\n", 0, i) + 1, i):  # a reference definition? to the blank line
        return BLANK_LINE.search(t, after) is None
    return False


def _bracket_hold(t: str, b: int) -> int:
    i = t.find("[", b)
    while i != -1:
        if not _escaped(t, i) and _bracket_open(t, i):
            return i - 1 if i - 1 >= b and t[i - 1] == "!" else i
        i = t.find("[", i + 1)
    return len(t)


def _angle_hold(t: str, b: int) -> int:
    tag, auto = _autolink_patterns()
    i = t.find("<", b)
    while i != -1:
        if not _escaped(t, i):
            for pattern in (tag, auto):
                m = pattern.match(t, i, partial=True)
                if m is not None and m.partial:
                    return i
        i = t.find("<", i + 1)
    return len(t)


def _word_hold(t: str, b: int) -> int:
    k = max(t.rfind(" "), t.rfind("\n"), t.rfind("\t")) + 1
    word = t[k:].lower().lstrip("(<\"'*_~[")
    if not word:
        return len(t)
    if any(c in word for c in ".:/&\\") or any(p.startswith(word) for p in URL_PREFIXES):
        return max(k, b)
    return len(t)


def _table_hold(t: str, b: int) -> int:
    nl = t.rfind("\n")
    current = t[nl + 1:]
    if "|" in current:
        return max(b, nl + 1 + current.index("|"))
    if nl != -1 and DELIMITER_SO_FAR.match(current):
        start = t.rfind("\n", 0, nl) + 1
        previous = t[start:nl]
        if "|" in previous:
            return max(b, start + previous.index("|"))
    return len(t)


def hold_start(t: str, b: int) -> tuple[int, bool]:
    """Where in ``t`` (whose text before ``b`` is already sent) the held-back part begins, and
    whether that point may fall inside a construct (a word or table hold, not an opener)."""
    opener = min(_bracket_hold(t, b), _angle_hold(t, b))
    other = min(_word_hold(t, b), _table_hold(t, b))
    if t.endswith(("!", "\\")):
        other = min(other, len(t) - 1)
    return max(min(opener, other), b), other < opener


def _construct_end(t: str, i: int) -> int:
    """End of the complete inline link or tag starting at ``i`` (``[`` or ``<``), else -1."""
    if t[i] == "<":
        tag, auto = _autolink_patterns()
        for pattern in (tag, auto):
            m = pattern.match(t, i)
            if m is not None:
                return m.end()
        return -1
    j = _close_bracket(t, i)
    if j is None or j < 0 or j + 1 >= len(t) or t[j + 1] != "(":
        return -1
    end = _destination_end(t, j + 2)
    return -1 if end is None else end


def _before_complete_constructs(t: str, b: int, h: int) -> int:
    """Move a cut at ``h`` back to the start of any complete link or tag it would split."""
    moved = True
    while moved:
        moved = False
        for i in [k for k, c in enumerate(t[b:h], b) if c in "<["]:
            if not _escaped(t, i) and _construct_end(t, i) > h:
                h, moved = (i - 1 if i - 1 >= b and t[i - 1] == "!" else i), True
                break
    return h


_TAG_START = re.compile(r"<[A-Za-z]")  # only such a tag can be left open (link_scan._html_block)


def _needs_parse(text: str) -> bool:
    if any(c in SLOW_CHARS for c in text):
        return True
    lower = text.lower()
    return "www." in lower or ("." in text and any(c in text for c in "/?#"))


class LinkGuard:
    def __init__(self, policy: LinkPolicy, stats: LinkStats | None = None):
        self.policy = policy
        self.stats = stats or LinkStats()
        self._tail = ""  # text sent since the start of the last top-level block
        self._pending = ""

    # -- stream -----------------------------------------------------------------------------------
    def feed(self, text: str) -> str:
        self._pending += text
        return self._release(final=False)

    def finish(self) -> str:
        return self._release(final=True)

    def sanitize(self, text: str) -> str:
        """A whole text at once (a fresh guard's ``feed`` + ``finish``)."""
        return self.feed(text) + self.finish()

    def _release(self, final: bool) -> str:
        if not self._pending:
            return ""
        cut = len(self._pending) if final else self._cut()
        if cut == 0:
            return ""
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._clean(ready)

    def _cut(self) -> int:
        b = len(self._tail)
        inside = False
        for _ in range(16):
            t = self._tail + self._pending
            h, inside = hold_start(t, b)
            if len(t) - h <= HOLD_LIMIT:
                break
            if t[h] == "!" and t[h + 1:h + 2] == "[":
                h += 1
            if t[h] not in OPENER_ESCAPES:
                break
            k = h - b  # a hold too long: the opener becomes literal text
            self._pending = self._pending[:k] + OPENER_ESCAPES[t[h]] + self._pending[k + 1:]
        t = self._tail + self._pending
        if inside:
            h = _before_complete_constructs(t, b, h)
        # a tag left open at the end of a raw HTML block: the next ``>`` may close it
        if _TAG_START.search(t, b, min(len(t), h + 1)):
            open_tag = scan(t).open_tag
            if open_tag is not None and b <= open_tag < h:
                h = open_tag
        return max(0, h - b)

    # -- cleaning -----------------------------------------------------------------------------------
    def _verdict(self, c: Construct) -> Verdict:
        if c.kind == "html":
            return self.policy.judge_tag(c.tag or "")
        return self.policy.judge_all(c.hrefs or [""])

    def _refused(self, text: str) -> tuple[list[tuple[Construct, Verdict]], list[int] | None]:
        if not _needs_parse(text) and len(text) < 2000:  # long context: parse anyway, to drop closed blocks
            return [], None
        result = scan(text)
        bad = []
        for c in result.constructs:
            verdict = self._verdict(c)
            if not verdict.allowed:
                bad.append((c, verdict))
        return bad, result.block_starts

    def _count(self, verdict: Verdict) -> None:
        self.stats.removed += 1
        self.stats.hosts.append(verdict.host)

    def _clean(self, ready: str) -> str:
        base, b = self._tail, len(self._tail)
        if not any(c in TRIGGERS for c in ready) and len(base) < 2000:
            self._tail += ready  # plain words cannot make or complete a link
            return ready
        sent: list[tuple[Any, ...]] | None = None
        candidate = ready
        for _ in range(6):
            bad, starts = self._refused(base + candidate)
            if bad and sent is None:
                sent = [_identity(c) for c, _ in self._refused(base)[0]]
            bad = _new_only(bad, sent or [])
            if not bad:
                return self._sent(base + candidate, starts, candidate)
            edits = []
            for c, verdict in bad:
                if c.start is None or c.end is None or c.end <= b:
                    continue  # e.g. a reference sent earlier whose definition is refused below
                if c.start >= b:
                    edits.append((c.start - b, c.end - b, _replacement(c), verdict))
                elif c.kind == "bare":  # a bare URL that began in text already sent: cut its rest
                    edits.append((0, c.end - b, REMOVED, verdict))
            if not edits:
                break
            candidate = self._apply(candidate, edits)
        candidate = self._escape(ready)
        bad, starts = self._refused(base + candidate)
        self.stats.escaped += 1
        if _new_only(bad, sent or []):
            log.error("link guard: %d refused link(s) survived escaping; replacing the text", len(bad))
            candidate = REMOVED
            bad, starts = self._refused(base + candidate)
        return self._sent(base + candidate, starts, candidate)

    def _apply(self, text: str, edits: list[tuple[int, int, str, Verdict]]) -> str:
        out, pos = [], 0
        for start, end, replacement, verdict in sorted(edits, key=lambda e: (e[0], -e[1])):
            if start < pos:  # inside an edit already made (a link holding an image): next pass
                continue
            out.append(text[pos:start])
            out.append(replacement)
            pos = end
            self._count(verdict)
        out.append(text[pos:])
        return "".join(out)

    def _escape(self, ready: str) -> str:
        """``ready`` with refused bare URLs removed and every character of link syntax written as a
        character reference (rendered the same, but never syntax)."""
        linkify = linkifier()
        out, pos = [], 0
        for m in (linkify.match(ready) or []) if linkify.pretest(ready) else []:
            if not counts_as_link(m):
                continue
            verdict = self.policy.judge(m.url)
            out.append("".join(ESCAPES.get(ch, ch) for ch in ready[pos:m.index]))
            if verdict.allowed:
                out.append(ready[m.index:m.last_index])
            else:
                out.append(REMOVED)
                self._count(verdict)
            pos = m.last_index
        out.append("".join(ESCAPES.get(ch, ch) for ch in ready[pos:]))
        return "".join(out)

    def _sent(self, text: str, block_starts: list[int] | None, released: str) -> str:
        """Record ``released`` as sent; keep only the last top-level block as context."""
        self._tail = text[block_starts[-1]:] if block_starts else text
        return released


def _identity(c: Construct) -> tuple[Any, ...]:
    return (c.kind, tuple(c.hrefs), c.tag, c.start, c.end)


def _new_only(bad: list[tuple[Construct, Verdict]], sent: list[tuple[Any, ...]]) -> list[tuple[Construct, Verdict]]:
    """``bad`` without the refused constructs that were already in the text sent before (nothing
    can change those any more; they are not a reason to escape or replace the new text)."""
    left = list(sent)
    out = []
    for c, verdict in bad:
        key = _identity(c)
        if key in left:
            left.remove(key)
        else:
            out.append((c, verdict))
    return out


def _replacement(c: Construct) -> str:
    if c.kind in ("bare", "autolink"):
        return REMOVED
    return c.replacement
