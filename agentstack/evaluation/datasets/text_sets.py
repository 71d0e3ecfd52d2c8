"""Adapters for the question-answering, summarisation, translation and preference sets.

Each reads the files as published upstream (see the SOURCE.txt beside them) from a path, which may
be the file itself or the directory holding it:

* ``clapnq``: CLAP NQ dev (``clapnq_dev_{answerable,unanswerable}.jsonl``): question, gold passage
  as context, long-form reference answers (unanswerable ones have none: ``fields.answerable``).
* ``qmsum``: QMSum test (``qmsum_test.jsonl``): one example per query; the context is the query's
  relevant transcript spans (``spans: relevant``) or the whole meeting (``spans: full``).
* ``ntrex``: NTREX-128 (``newstest2019-src.eng.txt`` + ``newstest2019-ref.<lang>.txt``),
  line-aligned source and reference.
* ``hh_rlhf``: Anthropic HH-RLHF (``*.jsonl.gz``): the shared conversation, and the chosen and
  rejected final assistant turns.

This module knows nothing about models or metrics.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from agentstack.errors import InvalidRequestError
from agentstack.evaluation.datasets.base import Example, register_adapter, require_path


def _file(path: Path, pattern: str, what: str) -> Path:
    path = require_path(path, what)
    if path.is_file():
        return path
    found = sorted(path.glob(pattern))
    if not found:
        raise InvalidRequestError(f"no {what} file matching {pattern!r} in {path}", param="dataset.path",
                                  fix="give the file itself or the directory that holds it")
    return found[0]


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidRequestError(f"option {name}={value!r}; allowed: {', '.join(allowed)}",
                                  param=f"dataset.options.{name}")
    return value


@register_adapter("clapnq")
def clapnq(path: Path, split: str = "answerable") -> Iterator[Example]:
    _choice("split", split, ("answerable", "unanswerable", "all"))
    path = require_path(path, "CLAP NQ data")
    splits = ["answerable", "unanswerable"] if split == "all" else [split]
    for part in splits:
        file = path if path.is_file() else _file(path, f"clapnq_dev_{part}.jsonl", "CLAP NQ")
        with file.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                answers = [o.get("answer", "") for o in rec.get("output", []) if o.get("answer")]
                passages = rec.get("passages", [])
                yield Example(id=str(rec["id"]), input=rec["input"], reference=answers or None,
                              contexts=[p.get("text", "") for p in passages],
                              fields={"titles": [p.get("title", "") for p in passages],
                                      "answerable": bool(answers)})
        if path.is_file():
            break


_QMSUM_TAGS = re.compile(r"\{\w+\}")


def _turns_text(turns: list[dict], clean: bool) -> str:
    lines = []
    for t in turns:
        content = t.get("content", "")
        if clean:
            content = " ".join(_QMSUM_TAGS.sub(" ", content).split())
        if content:
            lines.append(f"{t.get('speaker', '?')}: {content}")
    return "\n".join(lines)


@register_adapter("qmsum")
def qmsum(path: Path, queries: str = "specific", spans: str = "relevant", clean: bool = True) -> Iterator[Example]:
    """``queries``: specific | general | all. ``clean`` drops the {vocalsound}-style tags."""
    _choice("queries", queries, ("specific", "general", "all"))
    _choice("spans", spans, ("relevant", "full"))
    file = _file(path, "*.jsonl", "QMSum")
    with file.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            meeting = json.loads(line)
            turns = meeting["meeting_transcripts"]
            full = _turns_text(turns, clean)
            if queries in ("general", "all"):
                for j, q in enumerate(meeting.get("general_query_list", [])):
                    yield Example(id=f"qmsum-{i}-g{j}", input=q["query"], reference=q["answer"], contexts=[full],
                                  fields={"meeting": i, "query_type": "general"})
            if queries in ("specific", "all"):
                for j, q in enumerate(meeting.get("specific_query_list", [])):
                    if spans == "full":
                        context = full
                    else:
                        pieces = [_turns_text(turns[int(s):int(e) + 1], clean)  # spans are inclusive
                                  for s, e in q.get("relevant_text_span", [])]
                        context = "\n...\n".join(p for p in pieces if p) or full
                    yield Example(id=f"qmsum-{i}-s{j}", input=q["query"], reference=q["answer"],
                                  contexts=[context], fields={"meeting": i, "query_type": "specific"})


LANGUAGES = {"eng": "English", "deu": "German", "fra": "French", "spa": "Spanish", "jpn": "Japanese",
             "zho-CN": "Chinese (Simplified)"}


@register_adapter("ntrex")
def ntrex(path: Path, source: str = "eng", target: str = "deu") -> Iterator[Example]:
    """Line-aligned NTREX-128 segments; ``fields.target_language`` names the target for prompts."""
    path = require_path(path, "NTREX-128 data")
    src = path / f"newstest2019-src.{source}.txt"
    ref = path / f"newstest2019-ref.{target}.txt"
    for p in (src, ref):
        require_path(p, "NTREX file")
    docs_file = path / "DOCUMENT_IDS.tsv"
    docs = docs_file.read_text("utf-8").splitlines() if docs_file.exists() else []
    sources = src.read_text("utf-8").splitlines()
    refs = ref.read_text("utf-8").splitlines()
    if len(sources) != len(refs):
        raise InvalidRequestError(f"{src.name} has {len(sources)} lines but {ref.name} has {len(refs)}",
                                  param="dataset.path", fix="use the line-aligned files as published")
    for i, (s, r) in enumerate(zip(sources, refs), start=1):
        yield Example(id=f"ntrex-{target}-{i}", input=s, reference=r,
                      fields={"document": docs[i - 1] if i <= len(docs) else None,
                              "source_language": LANGUAGES.get(source, source),
                              "target_language": LANGUAGES.get(target, target)})


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def split_hh(transcript: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: hi\\n\\nAssistant: hello"`` → chat messages."""
    parts = _HH_TURN.split(transcript)
    messages = []
    for role, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    return messages


def render_conversation(messages: Iterable[dict[str, str]]) -> str:
    return "\n".join(f"{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages)


@register_adapter("hh_rlhf")
def hh_rlhf(path: Path) -> Iterator[Example]:
    """Pairs whose transcripts parse and end with an assistant turn; ``input`` is the conversation
    before that turn, ``fields.chosen``/``fields.rejected`` the two final replies."""
    file = _file(path, "*.jsonl*", "HH-RLHF")
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            rec = json.loads(line)
            chosen, rejected = split_hh(rec["chosen"]), split_hh(rec["rejected"])
            if (len(chosen) < 2 or chosen[-1]["role"] != "assistant" or not rejected
                    or rejected[-1]["role"] != "assistant"):
                continue
            history = chosen[:-1]
            yield Example(id=f"hh-{i}", input=render_conversation(history),
                          fields={"messages": history, "chosen": chosen[-1]["content"],
                                  "rejected": rejected[-1]["content"]})
