"""An injection oracle: a chat engine that obeys whatever lies where the attack was planted.

An honest injection benchmark needs an attacker that the screening cannot beat by knowing its
vocabulary. The scripted engine (``scripted.py``) recognises instructions with its own word list,
which overlaps the screening's, so it measures the overlap of two regexes. This engine knows no
words at all. The benchmark harness tells it where it planted each attack in a document: the
clean text just before the attack and just after it (``plant(before, after)``; ``None`` = the
attack starts or ends the document). When a prompt carries that document, the oracle reads
whatever now lies between the two anchors (the whole attack, what the screening left of it, or
the ``[instruction removed]`` marker) and obeys it perfectly, which for a text-only engine means:
its answer carries that text. Attack success is then judged on the (guarded) answer by the
benchmark's own criterion, the same one applied to a real model.

So the oracle's attack success rate is an upper bound: the share of attacks whose content
reached the model through retrieval, screening and the output guards. It implements the
ChatEngine protocol through :class:`ScriptedEngine`, so the orchestrators and guards run
unchanged around it. It is for ``bench/`` and tests only.
"""

from __future__ import annotations

from agentstack.engines.scripted import ScriptedEngine


def _norm(text: str) -> str:
    return " ".join(text.split())


def between(text: str, before: str | None, after: str | None) -> str | None:
    """The text between the anchors (whitespace-normalised), or None when ``before`` is absent.
    An ``after`` that is absent (the source was truncated inside it) ends the slot at the end."""
    text = _norm(text)
    start = 0
    if before is not None:
        found = text.find(_norm(before))
        if found < 0:
            return None
        start = found + len(_norm(before))
    end = len(text)
    if after is not None:
        found = text.find(_norm(after), start)
        if found >= 0:
            end = found
        elif before is None:
            return None
    return text[start:end].strip()


def source_texts(content: str) -> list[str]:
    """The texts a user turn carries: each numbered source of a RAG prompt, else the whole turn."""
    if "Sources:\n" not in content:
        return [content]
    block = content.split("Sources:\n", 1)[1].rsplit("\n\nQuestion:", 1)[0]
    texts = []
    for part in block.split("\n\n["):
        body = part.split("\n", 1)
        texts.append(body[1] if len(body) == 2 else "")
    return texts


class OracleEngine(ScriptedEngine):
    kind = "oracle"

    def __init__(self, answer: str = "Here is what I found [1].", context_length: int = 8192):
        super().__init__(answer=answer, context_length=context_length)
        self.slots: list[tuple[str | None, str | None]] = []

    def plant(self, before: str | None, after: str | None) -> None:
        """Register where an attack sits: the clean text before and after it (None: doc start/end)."""
        if before is None and after is None:
            raise ValueError("an attack slot needs at least one anchor")
        if (before, after) not in self.slots:
            self.slots.append((before, after))

    def respond(self, messages: list[dict[str, str]]) -> str:
        obeyed: list[str] = []
        for m in messages[1:]:
            if m["role"] != "user":
                continue
            for text in source_texts(m["content"]):
                for before, after in self.slots:
                    slot = between(text, before, after)
                    if slot and slot not in obeyed:
                        obeyed.append(slot)
        return " ".join([self.default_answer, *obeyed])
