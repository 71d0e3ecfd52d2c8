"""PERSON and LOCATION without a statistical model: gazetteers, word shape and context rules.

How a span is found (all offline, pure Python, about a millisecond per 1,000 characters):

1. **Street addresses** by regex: a house number and words ending in a street type (``12 Crown
   St``, ``Hammarvägen 15``, ``Rua do Arenque 1634``), ``Apt. 595`` / ``Suite 838`` / ``PO Box``.
2. **Capitalized runs**: maximal runs of capitalized (or all-caps) words, joined by name particles
   (``de``, ``van``...) and middle initials, never across a line break or a comma.
3. Each run is classified with the gazetteers (``gazetteer.py``): a known place n-gram is a
   LOCATION; a known first name followed by capitalized words is a PERSON; single words need a
   stronger gazetteer class, or context: a title (``Mr.``), a cue (``my name is``, ``says``) for
   people, a preposition (``in``, ``from``, ``to``) for places. Words that are also common English
   words (``Will``, ``Bath``) count only with context.
   More context rules: a possessive (``Amanda's daughter``), a speaker label (``Amy:``), a vocative
   (``Remember me, Kelly?``), ``<verb> at`` (``shouted at Gary``: a person, not a place), a street
   type after the run (``on Berg Hills Street``: a place), and a word listed with people
   (``Kónya, Becker and Vasquez``). Nationality adjectives (``Danish food``) are neither. An unknown
   word after a bare ``at``/``of``/``from`` is not taken as a place (``at Teradata`` is as often a
   company), but one after ``originally from`` or ``arrived at`` is.
4. Lines of an address block (after a street line: city, region, country, postcode) become
   LOCATION, and neighbouring LOCATION pieces are merged into one span. A line holding only a
   country (and perhaps a postcode) also ends an address block: it and the address-like lines
   directly above it become one LOCATION. An address stops growing at a phone-number line.

It knows nothing about policies, operators or the other entities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult
from spacy.lang.en.stop_words import STOP_WORDS as _STOP_WORDS

from agentstack.ingest.pii.gazetteer import Gazetteer, normalize

# Street types (USPS Publication 28 suffixes and common abbreviations), written before the name
# in Romance languages, and as word endings in Germanic and Nordic ones.
_SUFFIXES = (
    "Street|St|Avenue|Ave|Av|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Place|Pl|Square|Sq|Terrace|Ter|"
    "Way|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Crescent|Cres|Close|Row|Walk|Gardens|Grove|Hill|Hills|Park|Parks|"
    "Trail|Trl|Loop|Alley|Path|Pike|Plaza|Point|Pt|Ridge|Run|Crossing|Xing|Gateway|Isle|Island|Junction|Key|"
    "Knoll|Landing|Manor|Meadow|Meadows|Mews|Mill|Mills|Mount|Orchard|Oval|Pass|Port|Ranch|Rapids|Rest|Route|"
    "Shore|Shores|Spring|Springs|Station|Summit|Throughway|Track|Turnpike|Union|Valley|View|Village|Vista|Wall|"
    "Well|Wells|Cove|Creek|Dale|Dam|Estate|Estates|Expressway|Falls|Ferry|Field|Fields|Flat|Flats|Ford|Forest|"
    "Fork|Fort|Freeway|Glen|Green|Harbor|Harbour|Haven|Heights|Hollow|Inlet|Lake|Lakes|Light|Lock|Lodge|Motorway|"
    "Neck|Parade|Quay|Embankment|Wharf|Broadway|Common|Corner|Corners|Bypass|Causeway|Center|Centre|Cliff|Cliffs|"
    "Club|Camp|Canyon|Cape|Bridge|Brook|Burg|Bluff|Bottom|Branch|Bend|Beach|Bay|Arcade|Annex|Mall|Pines|Rise|"
    "Courts|Bypass|Overpass|Underpass|Passage|Skyway|Spur|Trace|Tunnel|Viaduct|Ville|Ways|Views|Villages|Plains|"
    "Squares|Streets|Roads|Routes|Islands|Harbors|Ports|Greens|Drives|Extension|Ext|Crossroad|Stravenue"
)
_NORDIC_ENDINGS = (
    "vej|gade|vænget|stræde|allé|alle|vägen|väg|gatan|gränd|stigen|backe|torget|veien|vegen|gata|stien|tie|katu|"
    "kuja|polku|raitti|väylä|straße|strasse|str|weg|gasse|platz|ring|damm|allee|ufer|laan|straat|plein|gracht|"
    "dreef|singel|kade|hof|steeg|utca|útja|út|tér|ulica|ucica|cesta|náměstí|třída|ulice|street|road|graben|markt|"
    "steig|pfad|zeile|kamp|terrasse|kapu|sor|köz|körút|sétány|sugárút"
)
_PREFIX_TYPES = (
    "Rua|Via|Viale|Vicolo|Corso|Piazza|Piazzale|Largo|Avenida|Avda|Av|Calle|Carrer|Camino|Paseo|Plaza|Praça|"
    "Travessa|Rodovia|Estrada|Strada|Rue|Avenue|Boulevard|Chemin|Allée|Impasse|Place|Quai|Ulica|Ul|Aleja|Al|"
    "Ulitsa|Prospekt|Odos|Leoforos|Platia|Calea|Bulevardul|Strada|Straße"
)
_NAME_PARTICLES = "de|da|do|dos|das|del|della|di|du|des|la|le|van|von|der|den|al|el"
_CAPWORD = r"[A-ZÀ-ÖØ-ÞĀ-ŽΆ-ΏΑ-ΩЀ-Я][\w'’.-]*"
_STREET_RES = [
    # 12 Crown St / 2450 Fourth Avenue / 69 Farnell Street (optionally with a second leading number)
    (re.compile(rf"(?<![\w-])(?:\d{{1,6}}\s+)?\d{{1,6}}[A-Za-z]?,?\s+(?:{_CAPWORD}\s+){{0,4}}"
                rf"(?i:{_SUFFIXES}|str)\b\.?"), 0.85),
    # the corner of X and Y (X may hold abbreviations: "ul. Cicha 86", "kapu 39.")
    (re.compile(rf"\b(?:the )?(?:corner|intersection|junction) of (?:[^\n.,;!?{{}}]|\.(?= ?\w)){{3,60}}? and "
                rf"(?:(?:[^\W\d][\w'’.-]*\s+){{1,3}}(?:{_SUFFIXES})\b\.?|[^\n,;!?{{}}]{{3,40}}?"
                r"(?=[.,;!?]?(?:\s|$))(?![^\n]*\b(?:and)\b))", re.IGNORECASE), 0.8),
    # US military addresses: USS Lorenzen / FPO AE 25990, PSC 1234, Box 5678 / APO AA 12345
    (re.compile(r"\b(?:USS|USNS|USNV|USCGC)[ \t]+[^\W\d][\w'’-]*(?:[ \t]+[A-Z][\w'’-]*)?"
                r"(?:[ \t]*\n?[ \t]*[FAD]PO[ \t]+A[AEP][ \t]+\d{5})?|\b(?:PSC|Unit)[ \t]+\d{3,5},?[ \t]+Box[ \t]+\d{1,5}"
                r"(?:[ \t]*\n?[ \t]*[FAD]PO[ \t]+A[AEP][ \t]+\d{5})?|\b[FAD]PO[ \t]+A[AEP][ \t]+\d{5}\b", re.IGNORECASE), 0.8),
    # 846 31 Rue Al Imam Al Bakri
    (re.compile(rf"(?<![\w-])\d{{1,6}}\s+(?:\d{{1,6}}\s+)?(?i:{_PREFIX_TYPES})\.?(?:\s+{_CAPWORD}|\s+(?:{_NAME_PARTICLES})(?=\s+{_CAPWORD})){{1,5}}"), 0.8),
    # Király u. 15. / Mickiewicza ul. 3 (Hungarian and Polish street abbreviations after the name)
    (re.compile(rf"(?<![\w-])(?:\d{{1,6}}\s+)?(?:{_CAPWORD}\s+){{1,3}}(?:u|krt|rkp|ul|al|pl)\.\s*\d{{1,5}}\b\.?"), 0.8),
    # Hammarvägen 15 / Puruntie 82 / Gerrit Achterberghove 137 / Victor Hugo u. 49.
    (re.compile(rf"(?<![\w-])(?:\d{{1,6}}\s+)?(?:{_CAPWORD}\s+){{0,3}}[^\W\d_]*(?i:{_NORDIC_ENDINGS})\.?\s+\d{{1,5}}"
                r"[A-Za-z]?\b\.?"), 0.8),
    # Rua do Arenque 1634 / Via Franscini 71 / Strada Provinciale 65 22
    (re.compile(rf"(?<![\w-])(?:\d{{1,6}}\s+)?(?:{_PREFIX_TYPES})\.?\s+(?:[\w'’.-]+\s+){{0,5}}?\d{{1,5}}[A-Za-z]?"
                r"(?:\s+\d{1,5})?\b"), 0.8),
    # Apt. 595 / Suite 838 / Unit 4B / PO Box 21 / Postbox 21
    (re.compile(r"\b(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|P\.?\s?O\.?\s?Box|Postbox|Box)\.?\s*#?\s*"
                r"\d{1,6}[A-Za-z]?\b"), 0.75),
    # 28245 Puruntie 82: a house number, one capitalized word and a number
    (re.compile(rf"(?<![\w-])\d{{1,6}}\s+{_CAPWORD}(?:\s+{_CAPWORD}){{0,2}}\s+\d{{1,5}}\b"), 0.6),
]

_TITLES = {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "dame", "lord", "lady", "mister",
           "rev", "fr", "sr", "jr"}
_PARTICLES = {"de", "da", "do", "dos", "das", "del", "della", "di", "du", "la", "le", "van", "von", "der", "den",
              "ten", "ter", "y", "e", "al", "el", "bin", "ibn", "z", "u", "af", "av", "zu", "st"}
_PERSON_CUES = ("my name is", "name is", "named", "called", "call me", "i'm", "i am", "this is", "name:",
                "says", "said", "by", "with", "dear", "hi", "hello", "thanks", "meet", "ask", "tell", "under",
                "kid", "son", "daughter", "wife", "husband", "partner's name", "speak to", "player", "singer",
                "director", "producer", "commenter", "starring", "directed by", "written by", "founders:",
                "user:", "ms.", "mr.")
_PLACE_CUES = ("in", "from", "to", "at", "near", "visit", "visiting", "of", "lives in", "live in", "moved to",
               "born in", "city of", "town of", "based in", "arrived at", "travelling to", "traveling to",
               "where:", "around", "across", "outside", "inside", "leaving", "left", "entering", "toward",
               "city", "town", "village", "home city", "hometown", "flew to", "flight to")
# "<verb> at X" is about a person, not a place ("shouted at Gary").
_PERSON_AT_CUES = ("shouted at", "yelled at", "screamed at", "looked at", "stared at", "glared at", "smiled at",
                   "laughed at", "waved at", "winked at", "pointed at", "glanced at", "angry at", "mad at")
# Strong person cues: after them a capitalized word that is also a common word is still a name.
_STRONG_PERSON_CUES = ("my name is", "name is", "named", "called", "call me", "says", "said", "dear",
                       "name:", "mr.", "mrs.", "ms.", "dr.", "my son", "my daughter", "my kid", "my wife",
                       "my husband", "my child")
# Nationality and language adjectives ("a Czech restaurant", "Danish food"): neither people nor places.
_NATIONALITY_WORDS = """
afghan albanian algerian american andorran angolan argentine argentinian armenian australian austrian azerbaijani
bahraini bangladeshi belarusian belgian bolivian bosnian brazilian british bulgarian burmese cambodian cameroonian
canadian chadian chechen chilean chinese colombian congolese croatian cuban cypriot czech danish dutch
ecuadorian egyptian english estonian ethiopian european filipino finnish french georgian german ghanaian greek
guatemalan haitian honduran hungarian icelandic indian indonesian iranian iraqi irish israeli italian ivorian
jamaican japanese jordanian kazakh kenyan korean kosovar kurdish kuwaiti kyrgyz laotian latvian lebanese libyan
lithuanian luxembourgish macedonian malagasy malaysian maltese mexican moldovan mongolian montenegrin moroccan
nepalese nigerian norwegian pakistani palestinian panamanian paraguayan persian peruvian polish portuguese
romanian russian rwandan saudi scottish senegalese serbian slovak slovakian slovenian somali spanish sudanese
swedish swiss syrian taiwanese tajik tanzanian thai tunisian turkish turkmen ugandan ukrainian uruguayan uzbek
venezuelan vietnamese welsh yemeni zambian zimbabwean arabic hebrew hindi latin basque catalan galician flemish
bavarian sicilian tuscan cantonese mandarin tamil bengali punjabi swahili yoruba zulu greenlandic faroese
"""
_NATIONALITIES = frozenset(_NATIONALITY_WORDS.split())
# Place cues ending in "at" or "from" that, unlike the bare words, rarely come before an organisation.
_STRONG_PLACE_CUES = tuple(" " + c for c in (
    "originally from", "is from", "am from", "are from", "i'm from", "comes from", "came from", "come from",
    "arrived at", "arrive at", "arriving at", "arrives at", "landed at", "born at", "grew up at"))
# Street types that follow a name ("on Berg Hills Street"): the run before them is a street name.
_STREET_AFTER = {"street", "st", "road", "rd", "avenue", "ave", "lane", "ln", "boulevard", "blvd", "drive",
                 "highway", "parkway"}
_PLACE_WORDS_AFTER = {"bridge", "country", "club", "city", "town", "leader", "government", "airport", "station",
                      "university", "county", "province", "district", "region", "harbour", "harbor", "river"}
_NOT_NAMES = {"i", "i'm", "i'll", "i'd", "i've", "ok", "okay", "mr", "mrs", "ms", "dr", "bot", "user", "god",
              "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february",
              "march", "april", "may", "june", "july", "august", "september", "october", "november",
              "december", "atm", "iban", "ssn", "email", "e-mail", "phone", "fax", "office", "mobile", "desk",
              "name", "address", "date", "website", "title", "personal", "info", "zip", "apt", "suite",
              "street", "st", "road", "avenue", "ceo", "tv", "usa", "uk", "eu", "ok"}

_ORG_WORDS = {"inc", "ltd", "llc", "plc", "corp", "corporation", "co", "company", "associates", "technologies",
              "technology", "group", "partners", "bank", "holdings", "systems", "solutions", "services",
              "insurance", "global", "capital", "university", "institute", "foundation", "markets", "media",
              "labs", "software", "consulting", "international", "industries", "enterprises", "gmbh", "ag",
              "sa", "bv", "ab", "oy", "as", "network", "networks", "agency", "studio", "studios", "records",
              "orchestra", "band", "club", "society", "council", "committee", "ministry", "department"}

_CONTINUATION = re.compile(r"[ \t]*(?:,[ \t]*|\n[ \t>?]*(?:,[ \t]*)?)?(?P<piece>[^\s,][^\n,]{0,60})")
_PIECE_WORD = re.compile(r"[^\s,]+")
_LIST_WORD = r"[A-ZÀ-ÖØ-ÞĀ-Ž][^\W\d_]*(?:['’-][^\W\d_]+)?"
_WORD_LIST = re.compile(rf"(?<![\w'’-])(?:{_LIST_WORD}, )+{_LIST_WORD},? (?:and|&) {_LIST_WORD}(?![\w'’-]| [A-Z])")
_LIST_ITEM = re.compile(_LIST_WORD)
_PHONE_LIKE = re.compile(r"\+?\(?\d[\d ().-]{6,}\d")
# A line that is only a country name, perhaps with a postcode ("South Africa 70651", "> Poland").
_COUNTRY_LINE = re.compile(r"(?m)^[ \t>?*-]*(?P<body>(?P<name>[^\W\d_][^\W\d_ .'’-]*(?:[ '’.-]+[^\W\d_]+){0,3}\.?)"
                           r"(?:[ \t,]+(?:\d{3,6}(?:[ -]\d{2,4})?|[A-Z]{1,2}\d[\dA-Z]?[ ]?\d[A-Z]{2}))?)[ \t.]*$")

_POSSESSIVE = {"'s", "’s", "'S", "’S"}
_TOKEN_RE = re.compile(r"[^\W\d_](?:[\w'’-]*\w)?\.?|\d+|\n|[^\w\s]")


@dataclass
class _Tok:
    text: str
    start: int
    end: int
    key: str  # normalized, trailing '.' removed
    cap: bool
    upper: bool
    line_start: bool
    after_punct: bool


def _tokens(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    line_start, after_punct = True, True
    lower_text = not any(ch.isupper() for ch in text)
    for m in _TOKEN_RE.finditer(text):
        s = m.group()
        if s == "\n":
            line_start = after_punct = True
            continue
        word = s.rstrip(".")
        cap = s[0].isupper() or lower_text and s[0].isalpha()
        possessive = len(word) > 3 and word[-2:] in _POSSESSIVE and word[-3].isalpha()
        if possessive:  # "Amanda's daughter": the name and the possessive are two tokens
            word = word[:-2]
            s = word
        toks.append(_Tok(s, m.start(), m.start() + len(s), normalize(word), cap,
                         cap and word.isupper() and len(word) > 1, line_start, after_punct))
        if possessive:
            toks.append(_Tok("'s", m.start() + len(s), m.start() + len(s) + 2, "'s", False, False, False, False))
        line_start = False
        after_punct = s in {".", "!", "?", ":", '"', "“", "”", ">", "(", "-", "–", "*", "•"} or (
            s.endswith(".") and len(s) > 2 and s.rstrip(".").lower() not in _TITLES and not (len(word) == 1))
    return toks


def _initial(t: _Tok) -> bool:
    """A middle initial: ``P.`` or ``P``."""
    return len(t.key) == 1 and t.text[0].isupper()


class NameLocationRecognizer(EntityRecognizer):
    """Finds PERSON and LOCATION with the gazetteers and rules described in the module docstring."""

    def __init__(self, gazetteer: Gazetteer) -> None:
        self.gaz = gazetteer
        super().__init__(supported_entities=["PERSON", "LOCATION"], name="GazetteerNameLocationRecognizer",
                         supported_language="en", context=[])

    def load(self) -> None:  # the gazetteer is loaded by the caller
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list[RecognizerResult]:
        want_person, want_place = "PERSON" in entities, "LOCATION" in entities
        if not (want_person or want_place):
            return []
        spans: list[tuple[str, int, int, float, str]] = []
        if want_place:
            spans.extend(self._streets(text))
        toks = _tokens(text)
        lower_text = not any(ch.isupper() for ch in text)
        for run in self._runs(toks, lower_text):
            found = self._classify(text, toks, run, spans)
            if found and (found[0] == "PERSON" and want_person or found[0] == "LOCATION" and want_place):
                spans.append(found)
        if want_person:
            spans.extend(self._listed_with_people(text, spans))
        if want_place:
            spans.extend(self._country_blocks(text, spans))
            spans = self._merge_places(text, self._extend_addresses(text, spans))
        return [self._result(*s) for s in spans]

    # ---------------------------------------------------------------------------------------
    def _result(self, entity: str, start: int, end: int, score: float, why: str) -> RecognizerResult:
        return RecognizerResult(entity, start, end, score,
                                analysis_explanation=AnalysisExplanation(self.name, score, textual_explanation=why),
                                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                      RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})

    def _streets(self, text: str) -> list[tuple[str, int, int, float, str]]:
        out = []
        for regex, score in _STREET_RES:
            for m in regex.finditer(text):
                out.append(("LOCATION", m.start(), m.end(), score, "street pattern"))
        return out

    def _is_word(self, key: str, in_name: bool = False) -> bool:
        """A common English word (alone it is not evidence of a name or a place). Function words
        always are; inside a multi-word run (``in_name``), a dictionary word that is also among the
        most common first or last names (rank <= 1,000 somewhere: Anna, Berg) counts as a name."""
        gaz = self.gaz
        if key in _STOP_WORDS or len(key) < 2:
            return True
        first, last = gaz.first.get(key, 0), gaz.last.get(key, 0)
        if in_name and (first >> 1 == 1 or last >> 1 == 1):
            return False
        return key in gaz.words or bool(first & 1) or bool(last & 1) or bool(gaz.places.get(key, 0) & 1)

    def _runs(self, toks: list[_Tok], lower_text: bool) -> list[tuple[int, int]]:
        """Index ranges [i, j) of capitalized runs (in an all-lower-case text: runs of words found
        in the name or place lists that are not common words)."""
        gaz = self.gaz

        def starts(t: _Tok) -> bool:
            if not (t.cap and t.key[:1].isalpha()):
                return False
            if lower_text:
                return (t.key in gaz.first or t.key in gaz.last or t.key in gaz.places) and not self._is_word(t.key)
            return True

        runs, i, n = [], 0, len(toks)
        while i < n:
            if not starts(toks[i]):
                i += 1
                continue
            j = i + 1
            while j < n and not toks[j - 1].text.endswith((".", ",")) or j < n and _initial(toks[j - 1]):
                u = toks[j]
                if u.line_start or u.text in {",", ":", ";"}:
                    break
                if starts(u):
                    j += 1
                elif u.key in _PARTICLES and j + 1 < n and starts(toks[j + 1]) and not toks[j + 1].line_start:
                    j += 2
                else:
                    break
            runs.append((i, j))
            i = j
        return runs

    def _context(self, text: str, toks: list[_Tok], i: int, width: int = 24) -> str:
        start = toks[i].start
        line_start = text.rfind("\n", 0, start) + 1
        ctx = re.sub(r"\s+", " ", text[max(line_start, start - width):start]).lower().strip()
        ctx = " " + ctx.rstrip("?:,\"'“ ")
        return ctx.removesuffix(" the")  # "to the Netherlands": the cue is "to"

    def _classify(self, text: str, toks: list[_Tok], run: tuple[int, int],
                  known: list[tuple[str, int, int, float, str]]):
        i, j = run
        # A leading title (Mr. Mrs. Dr.) is kept out of the span but is evidence.
        titled = False
        while i < j and toks[i].key in _TITLES:
            titled = True
            i += 1
        if i > 0 and toks[i - 1].key in _TITLES:
            titled = True
        while i < j and (toks[i].key in _NOT_NAMES or toks[i].key == "the") and not titled:
            i += 1
        whole_place = " ".join(t.key for t in toks[i:j]) in self.gaz.places if j - i > 1 else False
        while (j - i > 1 and not whole_place and (toks[i].after_punct or toks[i].line_start)
               and self._is_word(toks[i].key, True)):
            i += 1  # "Contact Johanna Lindqvist": a capitalized sentence-initial word is not part of a name
        street_end = toks[j].end if j < len(toks) and toks[j].cap and toks[j].key in _STREET_AFTER else None
        while j > i and toks[j - 1].key in _NOT_NAMES:
            if street_end is None and toks[j - 1].key in _STREET_AFTER:
                street_end = toks[j - 1].end
            j -= 1
        if i >= j:
            return None
        if street_end is not None and not titled:  # "on Berg Hills Street"
            end = street_end - 1 if text[street_end - 1] == "." else street_end
            return ("LOCATION", toks[i].start, end, 0.7, "name + street type")
        start, end = toks[i].start, toks[j - 1].end
        if toks[j - 1].text.endswith(".") and len(toks[j - 1].key) > 1:
            end -= 1
        if any(s <= start and end <= e for _, s, e, _, _ in known):
            return None  # inside a street address already found
        run_toks = toks[i:j]
        words = [t.key for t in run_toks if t.key not in _PARTICLES]
        the_place = (self.gaz.places.get(" ".join(t.key for t in toks[i:j]), 0) >> 1) >= 2  # the United States
        if not words or words[-1] in _ORG_WORDS or (i > 0 and toks[i - 1].key == "the" and len(words) > 1
                                                    and not the_place):
            return None
        gaz = self.gaz
        ctx = self._context(text, toks, i)
        nxt = toks[j] if j < len(toks) else None
        nxt_key = nxt.key if nxt else ""
        at_person = any(ctx.endswith(" " + c) for c in _PERSON_AT_CUES)
        place_ctx = not at_person and (any(ctx.endswith(" " + c) for c in _PLACE_CUES) or nxt_key in _PLACE_WORDS_AFTER)
        person_ctx = (titled or at_person or any(ctx.endswith(" " + c.rstrip(":")) for c in _PERSON_CUES)
                      or ctx.endswith(" name"))
        strong_ctx = titled or at_person or any(ctx.endswith(" " + c.rstrip(":")) for c in _STRONG_PERSON_CUES)
        speaker = toks[i].line_start and nxt is not None and nxt.text == ":" and len(words) <= 3
        # "Amanda's daughter" (but "Pave's Irena Bílá" is an organisation's person)
        possessive = nxt_key == "'s" and not (j + 1 < len(toks) and toks[j + 1].cap)
        vocative = (i > 0 and toks[i - 1].text == "," and nxt is not None and nxt.text in {"?", "!"})
        if len(words) == 1 and words[0] in _NATIONALITIES and not titled:
            return None
        first = gaz.first.get(words[0])
        place = gaz.places.get(" ".join(t.key for t in run_toks))
        sentence_start = toks[i].after_punct or toks[i].line_start
        all_upper = all(t.upper for t in run_toks)
        house_number = nxt is not None and nxt.key.isdigit() and len(nxt.key) <= 5 and (
            place_ctx or ctx.endswith(" on") or (i > 0 and toks[i - 1].key.isdigit()))
        if house_number:
            return ("LOCATION", start, nxt.end, 0.7, "street name + house number")
        if speaker and not any(self._is_word(w, True) for w in words) and (place is None or place >> 1 == 1):
            return ("PERSON", start, end, 0.7, "speaker label")

        if len(words) >= 2:
            if len(words) > 4:
                return ("LOCATION", start, end, 0.8, "place gazetteer") if place is not None else None
            last = gaz.last.get(words[-1])
            name_like = sum(1 for w in words if (w in gaz.first or w in gaz.last) and not self._is_word(w, True))
            initial = any(_initial(t) for t in run_toks[1:-1])
            if place is not None and ((place >> 1) >= 2 or place_ctx) and not person_ctx:
                return ("LOCATION", start, end, 0.85, "place gazetteer (country/region, or a city after a cue)")
            if (first is not None and not self._is_word(words[0], True)) or titled or initial or (person_ctx and name_like):
                score = 0.85 if (last is not None or titled or initial) else 0.7
                return ("PERSON", start, end, score, "first name + capitalized words")
            if place is not None:
                return ("LOCATION", start, end, 0.75 if not place & 1 else 0.5, "place gazetteer")
            if place_ctx and not any(self._is_word(w, True) for w in words):
                return ("LOCATION", start, end, 0.55, "place cue")
            if person_ctx and len(words) <= 3 and not any(self._is_word(w, True) for w in words):
                return ("PERSON", start, end, 0.6, "person cue + unknown capitalized words")
            if name_like >= 2 or name_like >= 1 and len(words) == 2 and not any(self._is_word(w, True) for w in words):
                return ("PERSON", start, end, 0.55, "name gazetteer (weak)")
            return None

        w = words[0]
        is_word = self._is_word(w)
        last = gaz.last.get(w)
        strong_first = first is not None and not first & 1 and (first >> 1) == 1
        if all_upper and not titled:
            if place is not None and (toks[i].line_start or place_ctx):
                return ("LOCATION", start, end, 0.6, "upper-case place")
            if (place_ctx and ctx.endswith((" in", " to", " at", " near", " city")) and len(w) >= 5
                    and not is_word and sum(ch in "aeiouyäöüåéèáíóú" for ch in w) >= 2 and w not in _NOT_NAMES):
                return ("LOCATION", start, end, 0.55, "upper-case word after a place cue")
            return None
        if vocative and first is not None and (first >> 1) == 1:
            return ("PERSON", start, end, 0.6, "vocative (', Kelly?')")
        if strong_ctx and not place_ctx and (first is not None or last is not None) and w not in _NOT_NAMES:
            return ("PERSON", start, end, 0.7, "strong person cue")
        if place is not None and place_ctx and not (place & 1 and sentence_start) and not (
                strong_first and (place >> 1) == 1 and not ctx.endswith((" in", " from"))):
            return ("LOCATION", start, end, 0.8, "place gazetteer + cue")
        if titled or person_ctx and not is_word and (first is not None or last is not None or not place_ctx):
            return ("PERSON", start, end, 0.75, "person cue")
        if place is not None and (place >> 1) == 3 and not place & 1:
            return ("LOCATION", start, end, 0.8, "country")
        if place_ctx and not is_word and (place is not None or not ctx.endswith((" at", " of", " from"))
                                          or ctx.endswith(_STRONG_PLACE_CUES)):
            # an unknown word after a bare "at", "of" or "from" is as often an organisation ("at Teradata")
            return ("LOCATION", start, end, 0.6 if place is not None else 0.5, "place cue")
        if first is not None and not is_word and (first >> 1) <= 2:
            return ("PERSON", start, end, 0.55 if not sentence_start or strong_first or possessive else 0.5,
                    "first name")
        if (possessive and not self._is_word(w, True) and (last is not None or first is not None)
                and (place is None or place >> 1 == 1)):
            return ("PERSON", start, end, 0.55, "name + possessive")
        if place is not None and not place & 1 and (place >> 1) >= 2:
            return ("LOCATION", start, end, 0.55, "region")
        return None

    def _extend_addresses(self, text: str, spans):
        """Grow each street-address span over what follows it on the same line after a comma or
        a space, and over the next lines, while they look like address parts (capitalized place
        words, region codes, postcodes); people found inside the grown span are dropped."""
        out = []
        for ent, s, e, score, why in spans:
            if ent == "LOCATION" and why == "street pattern":
                for _ in range(5):
                    m = _CONTINUATION.match(text, e)
                    if not m:
                        break
                    piece_end = m.start("piece")
                    for w in _PIECE_WORD.finditer(m.group("piece")):
                        word = w.group().rstrip(".")
                        key = normalize(word)
                        ok = (word[:1].isdigit() or word.isupper() or key in self.gaz.places
                              or word[:1].isupper() and not self._is_word(key) or key in _PARTICLES)
                        if not ok or key in _NOT_NAMES:
                            break
                        piece_end = m.start("piece") + w.end()
                    if piece_end == m.start("piece") or _PHONE_LIKE.match(m.group("piece")):
                        break
                    e = piece_end
            out.append((ent, s, e, score, why))
        streets = [(s, e) for ent, s, e, _, why in out if why in ("street pattern", "address block")]
        return [sp for sp in out if sp[0] == "LOCATION" or not any(a <= sp[1] and sp[2] <= b for a, b in streets)]

    def _listed_with_people(self, text: str, spans):
        """In a list of single capitalized words ("Kónya, Becker and Vasquez"), when some item is a
        PERSON and none is a LOCATION, the other items found in the name lists are people too."""
        out = []
        for m in _WORD_LIST.finditer(text):
            items = [(w.start(), w.end()) for w in _LIST_ITEM.finditer(m.group())]
            items = [(m.start() + a, m.start() + b) for a, b in items]
            kinds = {ent for ent, s, e, _, _ in spans for a, b in items if s < b and a < e}
            if "PERSON" not in kinds or "LOCATION" in kinds:
                continue
            for a, b in items:
                key = normalize(text[a:b])
                if (any(s < b and a < e for _, s, e, _, _ in spans) or key in _NOT_NAMES or key in _NATIONALITIES
                        or key in _STOP_WORDS or not (key in self.gaz.first or key in self.gaz.last)):
                    continue
                out.append(("PERSON", a, b, 0.55, "listed with a person"))
        return out

    def _country_blocks(self, text: str, spans):
        """A line holding only a country (and perhaps a postcode) ends an address block: that line
        and the address-like lines directly above it (no blank line between) are one LOCATION."""
        out = []
        places = self.gaz.places
        for m in _COUNTRY_LINE.finditer(text):
            code = places.get(normalize(m.group("name").strip()))
            if code is None or (code >> 1) != 3:
                continue
            start, end = m.start("name"), m.end("body")
            line_start = m.start()
            for _ in range(4):  # the lines above, while they look like parts of an address
                if line_start == 0:
                    break
                prev_start = text.rfind("\n", 0, line_start - 1) + 1
                line = text[prev_start:line_start - 1]
                body = line.strip(" \t>?*-")
                if not body or len(body) > 60 or "@" in body or ":" in body or not (body[0].isupper() or body[0].isdigit()):
                    break
                b0 = prev_start + line.find(body)
                known = any(ent == "LOCATION" and s < b0 + len(body) and b0 < e for ent, s, e, _, _ in spans)
                person = any(ent == "PERSON" and s <= b0 and b0 + len(body) <= e and sc >= 0.7
                             for ent, s, e, sc, _ in spans)
                words = [normalize(w.rstrip(".")) for w in _PIECE_WORD.findall(body)]
                looks = (known or normalize(body) in places or body.isupper() or any(ch.isdigit() for ch in body)
                         and len(body) <= 40 or not person and all(w[:1].isupper() or w in _PARTICLES
                                                                    for w in body.split()))
                if not looks or (person and normalize(body) not in places) or any(w in _NOT_NAMES for w in words):
                    break
                start, line_start = b0, prev_start
            out.append(("LOCATION", start, end, 0.8, "address block"))
        return out

    def _merge_places(self, text: str, spans):
        places = sorted((s for s in spans if s[0] == "LOCATION"), key=lambda s: (s[1], -s[2]))
        others = [s for s in spans if s[0] != "LOCATION"]
        merged: list[list] = []
        for ent, s, e, score, why in places:
            if merged and s <= merged[-1][2] + 3 and re.fullmatch(r"[\s,]*", text[merged[-1][2]:s] or ""):
                last = merged[-1]
                last[2] = max(last[2], e)
                last[3] = max(last[3], score)
            else:
                merged.append([ent, s, e, score, why])
        return others + [tuple(m) for m in merged]
