"""Text pieces the verifier works on: an answer split into claims (sentences, with their
citations), evidence split into sentences, content words, numbers, names, and the answer type a
question asks for.

Everything here is plain string work: it knows nothing about models, retrieval or streaming, and
gives the same result for a text whether it arrives whole or in pieces (``split_claims`` only
closes a sentence once the next one has started, see :func:`complete_claims`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from agentstack.orchestrators.guards import cited_numbers

CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
# A sentence ends at . ! ? (then closing quotes/brackets and citations) before whitespace and a
# capital, digit, quote or opening bracket; or at a blank line / a newline before a list item.
_BOUNDARY = re.compile(r"(?<=[.!?])((?:[\"')\]]|\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\])*)(\s+)(?=[A-Z0-9\"'(*-])"
                       r"|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)")
_ABBREV = re.compile(r"(?:(?:^|\n)\s*\d{1,2}\.$)|(?:\b(?:[A-Z]|Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Gen|Col|Lt|Mt|No|vs|etc|e\.g|i\.e|U\.S|"
                     r"Inc|Ltd|Co|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.)$")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+(?:\.\d+)?")
YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
MONTH = re.compile(r"\b(january|february|march|april|may|june|july|august|september|october|november|december|"
                   r"spring|summer|autumn|fall|winter|century|centuries|decade|bc|ad|bce)\b", re.IGNORECASE)
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
                     "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000",
                     "billion": "1000000000", "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5",
                     "half": "0.5", "dozen": "12"})
STOPWORDS = frozenset("""a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now
of off on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when where which
while who whom whose why will with would you your yours yourself yourselves s t don doesn didn isn wasn weren aren
known called named called one may might must shall also however thus therefore according source sources document
documents answer question mentioned provided given""".split())
WH = frozenset("what when where who whom whose which why how".split())


@dataclass(frozen=True)
class Claim:
    """One sentence of an answer: ``start``/``end`` are offsets in the answer, ``text`` is the
    sentence as written (citations included), ``body`` the sentence without its citations."""

    start: int
    end: int
    text: str
    body: str
    citations: tuple[int, ...]


def _cuts(text: str) -> list[int]:
    cuts = []
    for m in _BOUNDARY.finditer(text):
        if m.group(2) is not None and _ABBREV.search(text[:m.start()]):
            continue
        cuts.append(m.end(1) if m.group(2) is not None else m.start())
    return cuts


def split_claims(text: str) -> list[Claim]:
    """The sentences of ``text`` in order; whitespace between them belongs to no claim."""
    claims, start = [], 0
    for cut in [*_cuts(text), len(text)]:
        piece = text[start:cut]
        lead = len(piece) - len(piece.lstrip())
        body_text = piece.strip()
        if body_text:
            s = start + lead
            claims.append(Claim(start=s, end=s + len(body_text), text=body_text, body=strip_citations(body_text),
                                citations=tuple(cited_numbers(body_text))))
        start = cut
    return claims


def complete_claims(buffer: str) -> int:
    """How many characters at the start of ``buffer`` hold sentences that are finished: a sentence
    is finished once the next one has begun (so a citation after its full stop is still its own)."""
    cuts = _cuts(buffer)
    return cuts[-1] if cuts else 0


def strip_citations(text: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", CITATION.sub("", text)).strip()


def drop_citations(text: str, drop: set[int]) -> str:
    """``text`` without the citation numbers in ``drop`` (an emptied bracket goes with its space)."""
    def keep(m: re.Match[str]) -> str:
        kept = [n for n in re.findall(r"\d+", m.group(1)) if int(n) not in drop]
        return "[" + ", ".join(kept) + "]" if kept else ""

    out = CITATION.sub(keep, text)
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", out)).strip()


_SUFFIXES = (("ational", "ate"), ("ations", ""), ("ation", ""), ("ings", ""), ("ing", ""), ("edly", ""),
             ("ies", "y"), ("ied", "y"), ("ed", ""), ("es", ""), ("s", ""), ("ly", ""))


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix stripper (the same on both sides of every comparison, which is what counts):
    ``finished`` → ``finish``, ``towers`` → ``tower``, ``studies`` → ``study``."""
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[:-len(suffix)] + repl
    return word


def words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    """Stemmed words that carry content (no stop words); numbers normalised."""
    out = set()
    for w in words(text):
        if w in STOPWORDS or w.endswith("'s") and w[:-2] in STOPWORDS:
            continue
        if w in NUMBER_WORDS:
            out.add(NUMBER_WORDS[w])
        elif w.isdigit():
            out.add(w)
        elif len(w) > 1:
            out.add(stem(w.removesuffix("'s")))
    return out


def numbers(text: str) -> set[str]:
    """Numbers written in digits (``1,234`` → ``1234``) or as small number words."""
    found = {m.replace(",", "").rstrip("0").rstrip(".") if "." in m else m.replace(",", "")
             for m in _NUMBER.findall(text)}
    found.update(NUMBER_WORDS[w] for w in words(text) if w in NUMBER_WORDS and w not in ("first", "second", "half"))
    return found


def names(text: str) -> set[str]:
    """Lower-cased capitalised words that do not start a sentence and are not stop words: the
    names, places and titles a claim mentions."""
    out = set()
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        tokens = _WORD.findall(sentence)
        for i, tok in enumerate(tokens):
            if i and tok[:1].isupper() and tok.lower() not in STOPWORDS and not tok.isupper() or (
                    len(tok) > 1 and tok.isupper() and tok.isalpha()):
                out.add(tok.lower())
    return out


def answer_type(question: str) -> str:
    """What kind of answer the question asks for: ``date``, ``number``, ``person``, ``place``,
    ``yesno`` or ``other``."""
    q = question.lower().strip()
    if re.search(r"\b(when|what year|which year|what date|what day|what century|what decade|how long ago|"
                 r"what time|since when)\b", q):
        return "date"
    if re.search(r"\bhow (many|much|old|long|far|tall|big|high|deep|fast|large|heavy)\b|\b(percentage|"
                 r"percent|number of|amount of|population|age of)\b", q):
        return "number"
    if re.search(r"^(who|whom|whose)\b|\b(who|whom|whose)\b", q):
        return "person"
    if re.search(r"\bwhere\b|\bwhat (country|city|state|place|continent|county|region)\b", q):
        return "place"
    if re.match(r"^(is|are|was|were|do|does|did|can|could|will|would|has|have|had|should)\b", q):
        return "yesno"
    return "other"


def type_match(kind: str, claim: str, question: str) -> float | None:
    """1.0 when ``claim`` holds something of the kind the question asks for (not copied from the
    question), 0.0 when it does not, None when the kind puts no constraint on the claim."""
    if kind == "date":
        return float(bool(YEAR.search(claim) or MONTH.search(claim)))
    if kind == "number":
        return float(bool(numbers(claim) - numbers(question)))
    if kind in ("person", "place"):
        return float(bool(names(claim) - {w.lower() for w in words(question)}))
    return None
