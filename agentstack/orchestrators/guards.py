"""Output guards, enforced in code rather than left to the model.

Retrieved text is data, not instructions; a model that obeys an instruction hidden in a document
must still not be able to:

* cite a source that was never retrieved: ``[n]`` citations are checked against the sources given
  to the model, and unknown numbers are dropped;
* send the reader to an attacker's host: links, images, reference definitions, autolinks, raw HTML
  and bare URLs whose destination does not resolve, the way a browser resolves it, to an
  allowlisted host (``policies/guards.yaml``) or to the page's own host are removed (a link keeps
  its text); see ``link_guard.py``, ``link_scan.py`` and ``link_policy.py``;
* repeat the system prompt: any run of the answer that copies ``leak_chars`` or more characters of
  the system prompt is replaced by ``[removed]``.

:class:`AnswerGuard` works on a stream: it holds back only text that could still turn into one of
the constructs above (an open ``[``, a URL in progress, a tail that matches the system prompt) and
releases the rest at once. ``finish()`` flushes what is left. The guard also counts what it
removed, for the trace and the benchmarks.

This module knows nothing about models, retrieval or HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agentstack.orchestrators.link_guard import REMOVED, LinkGuard, LinkStats
from agentstack.orchestrators.link_policy import BASE_URL, LinkPolicy

CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


@dataclass
class GuardConfig:
    allowed_hosts: tuple[str, ...] = ()
    valid_citations: frozenset[int] | None = None  # None: citations are not checked (no sources)
    system_prompt: str = ""
    leak_chars: int = 40
    base_url: str = BASE_URL  # the page the answer is rendered on, for resolving relative links


@dataclass
class GuardStats:
    citations_dropped: int = 0
    links_removed: int = 0
    leaks_removed: int = 0
    hosts: list[str] = field(default_factory=list)


def host_allowed(url: str, allowed: tuple[str, ...], base_url: str = BASE_URL) -> bool:
    """Would a browser, resolving ``url`` against ``base_url``, stay on the base's host or go to an
    allowlisted one (over http or https)?"""
    return LinkPolicy(allowed, base_url).judge(url).allowed


class AnswerGuard:
    def __init__(self, config: GuardConfig):
        self.config = config
        self.stats = GuardStats()
        self._pending = ""
        self._out: list[str] = []
        self._tail = ""
        self._in_leak = False
        self._leak_text = ""
        self._leak_run = 0
        self._sp = config.system_prompt
        self._sp_lower = self._sp.lower()
        self._link_stats = LinkStats()
        self._links = LinkGuard(LinkPolicy(config.allowed_hosts, config.base_url), self._link_stats)

    @property
    def text(self) -> str:
        return "".join(self._out)

    # -- streaming --------------------------------------------------------------------------------
    def feed(self, text: str) -> str:
        self._pending += text
        if self._sp:
            span = self.config.leak_chars * 4
            base = self._leak_text if self._in_leak else self._tail
            match = self._suffix_in_prompt(base + self._pending)
            if self._in_leak and match >= min(span, self._leak_run + len(self._pending)):
                self._leak_run = min(span, self._leak_run + len(self._pending))  # the copy goes on: drop it
                self._leak_text = (base + self._pending)[-span:]
                self._pending = ""
                return ""
            if match >= self.config.leak_chars:  # a copy of the system prompt in progress: drop it
                keep = self._pending[:len(self._pending) - min(match, len(self._pending))]
                self._leak_text = (base + self._pending)[-span:]
                self._leak_run = match
                self._pending = ""
                out = self._stage_one(keep) if keep else ""
                if not self._in_leak:
                    out += REMOVED
                    self.stats.leaks_removed += 1
                self._in_leak = True
                return self._emit(out)
            self._in_leak = False
        cut = self._safe_cut(self._pending)
        if cut == 0:
            return ""
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._emit(self._stage_one(ready))

    def finish(self) -> str:
        ready, self._pending = self._pending, ""
        staged = self._emit(self._stage_one(ready)) if ready else ""
        return staged + self._publish(self._links.finish())

    def _emit(self, text: str) -> str:
        """Stage one's output: remembered for the leak check, then through the link guard."""
        self._tail = (self._tail + text)[-self.config.leak_chars * 4:]
        return self._publish(self._links.feed(text)) if text else ""

    def _publish(self, text: str) -> str:
        self._out.append(text)
        self.stats.links_removed = self._link_stats.removed
        self.stats.hosts = list(self._link_stats.hosts)
        return text

    def _safe_cut(self, text: str) -> int:
        """Length of the prefix of ``text`` that no later token can change the meaning of."""
        cut = len(text)
        bracket = self._open_bracket(text)
        if bracket is not None:
            cut = bracket
        if self._sp:
            held = self._suffix_in_prompt(self._tail + text)
            if held >= 8:  # may be the start of a leak: hold it back
                cut = min(cut, len(text) - min(held, len(text)))
        return max(0, cut)

    @staticmethod
    def _open_bracket(text: str) -> int | None:
        """Start of a ``[…]`` or ``[…](…`` at the end of ``text`` that the next tokens could turn
        into a citation or a link, or None."""
        idx = text.rfind("[")
        if idx == -1:
            return None
        start = idx - 1 if idx > 0 and text[idx - 1] == "!" else idx
        tail = text[idx:]
        close = tail.find("]")
        if close == -1:
            return start if len(tail) < 600 else None
        after = tail[close + 1:]
        if after == "":
            return start  # a "(" may follow and make it a link
        if after.startswith("("):
            return None if ")" in after or len(after) > 2100 else start
        return None

    def _suffix_in_prompt(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a substring of the system prompt
        (at most ``4 * leak_chars``)."""
        span = self.config.leak_chars * 4
        window = text[-span:].lower()
        best = 0
        lo, hi = 1, len(window)
        while lo <= hi:  # substring-ness of suffixes is monotone: if a suffix matches, shorter ones do
            mid = (lo + hi) // 2
            if window[-mid:] in self._sp_lower:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        return best

    # -- whole text -------------------------------------------------------------------------------
    def sanitize(self, text: str) -> str:
        """A whole text (not part of the stream) through every guard, counted in this guard's stats."""
        out = LinkGuard(self._links.policy, self._link_stats).sanitize(self._stage_one(text))
        self.stats.links_removed = self._link_stats.removed
        self.stats.hosts = list(self._link_stats.hosts)
        return out

    def _stage_one(self, text: str) -> str:
        """Unknown citations and system-prompt copies (links are the link guard's, after this)."""
        text = self._citations(text)
        if self._sp:
            text = self._leaks(text)
        return text

    def _citations(self, text: str) -> str:
        valid = self.config.valid_citations
        if valid is None:
            return text

        def check(match: re.Match[str]) -> str:
            numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
            kept = [n for n in numbers if n in valid]
            self.stats.citations_dropped += len(numbers) - len(kept)
            return "[" + ", ".join(str(n) for n in kept) + "]" if kept else ""

        return CITATION.sub(check, text)

    def _leaks(self, text: str) -> str:
        """Replace runs of ``leak_chars``+ characters copied from the system prompt."""
        n = self.config.leak_chars
        lower, sp = text.lower(), self._sp_lower
        out, i = [], 0
        while i < len(text):
            if i + n <= len(text) and lower[i:i + n] in sp:
                j = i + n
                while j < len(text) and lower[i:j + 1] in sp:
                    j += 1
                out.append(REMOVED)
                self.stats.leaks_removed += 1
                i = j
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


def cited_numbers(text: str) -> list[int]:
    """The source numbers cited in ``text``, in order of first appearance."""
    seen: list[int] = []
    for match in CITATION.finditer(text):
        for n in re.findall(r"\d+", match.group(1)):
            if int(n) not in seen:
                seen.append(int(n))
    return seen
