"""Feedback → preference data for TRL, with the guards against poisoning.

Sources of **pairs** (prompt, chosen, rejected):

* ``siblings``: regenerated answers to one prompt (one sibling group), one voted up and one down;
* ``correction``: a rated answer against the correction its user wrote;
* ``revision``: a thumbs-down answer against its constitutional revision (made by the model, see
  ``constitution.py``; the caller passes them in);
* ``constitution``: offline red-team pairs (original, revision), passed in as ``extra_pairs``.

**Unpaired** thumbs (prompt, completion, label) for KTO: every vote, plus each correction as a
desirable completion. Real traffic rarely gives both votes on one prompt.

**Grounding** (``grounding``): when the groundedness verifier found a sentence of a voted answer
unsupported by its sources, or repeating an earlier one (a loop), the answer as the model wrote it
is an undesirable completion, and,
when the (checked) answer shown was voted up, the rejected side of a pair with it.

Guards, in this order: PII scrubbing of every text (``feedback/scrub.py``); deduplication (same
prompt and completions; unpaired thumbs that disagree on the same completion keep the majority,
ties are dropped); a cap per end user and per API key for the round (newest kept); a held-out split
by a stable hash of the prompt text, so a prompt is never both trained on and used by the gate;
and :func:`require`, which refuses a round with too little data and says how much it needs.

This module knows nothing about HTTP or how training runs. It reads votes through
:class:`~agentstack.feedback.store.FeedbackStore` and returns plain records.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentstack.config import PreferenceSettings
from agentstack.errors import ConflictError
from agentstack.feedback.export import prompt_messages, rejected_raw_answer
from agentstack.feedback.scrub import TextScrubber
from agentstack.feedback.store import FeedbackStore, Voted


class InsufficientDataError(ConflictError):
    """Too little preference data for the requested round; the message says how much is needed. A
    conflict with the server's state (409), not a bad request: the same spec succeeds once enough
    feedback has been collected."""

    code = "insufficient_data"

    def __init__(self, message: str, *, needed: int, found: int, fix: str | None = None):
        super().__init__(message, fix=fix, param="thresholds")
        self.needed = needed
        self.found = found


@dataclass
class Pair:
    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str
    source: str
    at: float = 0.0
    user: str = ""  # pseudonym, for the caps only; never written to files
    key_id: str = ""
    ids: list[str] = field(default_factory=list)  # response ids behind the pair
    rejected_prompt: list[dict[str, Any]] | None = None  # reward-model pairs across prompts

    def row(self) -> dict[str, Any]:
        row = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected, "source": self.source,
               "ids": self.ids}
        if self.rejected_prompt is not None:
            row["rejected_prompt"] = self.rejected_prompt
        return row


@dataclass
class Unpaired:
    prompt: list[dict[str, Any]]
    completion: str
    label: bool
    source: str
    at: float = 0.0
    user: str = ""
    key_id: str = ""
    ids: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion, "label": self.label, "source": self.source,
                "ids": self.ids}


@dataclass
class PreferenceData:
    pairs: list[Pair] = field(default_factory=list)
    pairs_heldout: list[Pair] = field(default_factory=list)
    unpaired: list[Unpaired] = field(default_factory=list)
    unpaired_heldout: list[Unpaired] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def write(self, directory: Path) -> dict[str, str]:
        """Write the four JSONL files; returns each file's SHA-256 (recorded in the registry)."""
        directory.mkdir(parents=True, exist_ok=True)
        hashes = {}
        for name in ("pairs", "pairs_heldout", "unpaired", "unpaired_heldout"):
            lines = [json.dumps(item.row(), ensure_ascii=False, sort_keys=True) for item in getattr(self, name)]
            text = "\n".join(lines) + ("\n" if lines else "")
            (directory / f"{name}.jsonl").write_text(text, encoding="utf-8")
            hashes[name] = hashlib.sha256(text.encode()).hexdigest()
        return hashes


def prompt_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in messages)


def prompt_key(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(_norm(prompt_text(messages)).encode()).hexdigest()


def heldout_score(messages: list[dict[str, Any]]) -> float:
    """A stable number in [0, 1) per prompt text: prompts below the held-out fraction are held out."""
    return int(prompt_key(messages)[:12], 16) / float(16 ** 12)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def truncate_prompt(messages: list[dict[str, Any]], max_chars: int) -> list[dict[str, Any]]:
    """Drop the oldest turns (keeping the system message and the last user turn), then cut the
    system message's end, until the prompt fits ``max_chars``."""
    msgs = [dict(m) for m in messages]

    def size() -> int:
        return sum(len(str(m.get("content") or "")) for m in msgs)

    while size() > max_chars:
        middle = [i for i, m in enumerate(msgs[:-1]) if m.get("role") != "system"]
        if not middle:
            break
        del msgs[middle[0]]
    if size() > max_chars and msgs and msgs[0].get("role") == "system" and len(msgs) > 1:
        room = max(0, max_chars - sum(len(str(m.get("content") or "")) for m in msgs[1:]))
        msgs[0]["content"] = str(msgs[0]["content"])[:room]
    if size() > max_chars:
        last = msgs[-1]
        last["content"] = str(last.get("content") or "")[-max_chars:]
    return msgs


class PreferenceBuilder:
    """``build()`` one round's data from the votes in a window. ``options`` are the
    :class:`~agentstack.config.PreferenceSettings` with the job's overrides applied."""

    def __init__(self, store: FeedbackStore, scrubber: TextScrubber, options: PreferenceSettings,
                 *, modes: tuple[str, ...] | None = None, salt: bytes | None = None):
        self.store = store
        self.scrubber = scrubber
        self.options = options
        self.modes = modes
        self._salt = salt or secrets.token_bytes(16)

    def _user(self, key_id: str, user_id: str) -> str:
        return hmac.new(self._salt, f"{key_id}\x00{user_id}".encode(), hashlib.sha256).hexdigest()[:16]

    def votes(self, since: float | None, until: float | None) -> list[Voted]:
        votes = self.store.voted(since=since, until=until)
        if self.modes is not None:
            votes = [v for v in votes if v.response.mode in self.modes]
        return [v for v in votes if v.response.answer and v.response.answer.strip()]

    def build(self, since: float | None = None, until: float | None = None, *,
              revisions: dict[str, str] | None = None, extra_pairs: list[Pair] | None = None,
              use_votes: bool = True) -> PreferenceData:
        votes = self.votes(since, until) if use_votes else []
        raw_pairs, unpaired = self._from_votes(votes, revisions or {})
        stats: dict[str, Any] = {"votes": len(votes), "up": sum(v.feedback.rating == "up" for v in votes),
                                 "down": sum(v.feedback.rating == "down" for v in votes),
                                 "pairs_found": dict(Counter(p.source for p in raw_pairs))}
        raw_pairs += extra_pairs or []
        if extra_pairs:
            stats["pairs_found"]["constitution"] = len(extra_pairs)
        pairs, dup_pairs = _dedup(raw_pairs, lambda p: (prompt_key(p.prompt), _norm(p.chosen), _norm(p.rejected)))
        unpaired, dup_unpaired, conflicts = _dedup_unpaired(unpaired)
        pairs, capped_pairs = self._cap(pairs)
        unpaired, capped_unpaired = self._cap(unpaired)
        data = PreferenceData()
        data.pairs, data.pairs_heldout = self._split(pairs)
        data.unpaired, data.unpaired_heldout = self._split(unpaired)
        stats.update({
            "dropped": {"duplicate_pairs": dup_pairs, "duplicate_unpaired": dup_unpaired,
                        "conflicting_unpaired": conflicts, "over_cap_pairs": capped_pairs,
                        "over_cap_unpaired": capped_unpaired},
            "pairs": {"train": len(data.pairs), "heldout": len(data.pairs_heldout),
                      "by_source": dict(Counter(p.source for p in data.pairs))},
            "unpaired": {"train": len(data.unpaired), "heldout": len(data.unpaired_heldout),
                         "desirable": sum(u.label for u in data.unpaired),
                         "undesirable": sum(not u.label for u in data.unpaired)},
            "users": len({v.feedback.key_id + "\x00" + v.feedback.user_id for v in votes}),
            "window": {"since": since, "until": until},
            "pii_replaced": dict(self.scrubber.counts), "pii_policy": self.scrubber.policy_id,
        })
        data.stats = stats
        return data

    # -- sources ----------------------------------------------------------------------------------
    def _prepare(self, v: Voted) -> tuple[list[dict[str, Any]], str]:
        prompt = truncate_prompt(self.scrubber.messages(prompt_messages(v.response)), self.options.max_prompt_chars)
        return prompt, self.scrubber.text(v.response.answer) or ""

    def _from_votes(self, votes: list[Voted], revisions: dict[str, str]) -> tuple[list[Pair], list[Unpaired]]:
        pairs: list[Pair] = []
        unpaired: list[Unpaired] = []
        groups: dict[str, list[tuple[Voted, list[dict[str, Any]], str]]] = defaultdict(list)
        for v in votes:
            fb, rec = v.feedback, v.response
            prompt, answer = self._prepare(v)
            user = self._user(fb.key_id, fb.user_id)
            common = {"at": fb.updated_at, "user": user, "key_id": fb.key_id}
            groups[rec.parent_id or rec.id].append((v, prompt, answer))
            unpaired.append(Unpaired(prompt, answer, fb.rating == "up", "thumb", ids=[rec.id], **common))
            raw = self.scrubber.text(rejected_raw_answer(rec.grounding))
            if raw and raw.strip():
                unpaired.append(Unpaired(prompt, raw, False, "grounding", ids=[rec.id], **common))
                if fb.rating == "up" and answer.strip() and _norm(raw) != _norm(answer):
                    pairs.append(Pair(prompt, answer, raw, "grounding", ids=[rec.id], **common))
            correction = self.scrubber.text(fb.correction)
            if correction and _norm(correction) != _norm(answer):
                pairs.append(Pair(prompt, correction, answer, "correction", ids=[rec.id], **common))
                unpaired.append(Unpaired(prompt, correction, True, "correction", ids=[rec.id], **common))
            elif fb.rating == "down" and rec.id in revisions:
                revision = self.scrubber.text(revisions[rec.id]) or ""
                if revision.strip() and _norm(revision) != _norm(answer):
                    pairs.append(Pair(prompt, revision, answer, "revision", ids=[rec.id], **common))
        for members in groups.values():
            ups = [m for m in members if m[0].feedback.rating == "up"]
            downs = [m for m in members if m[0].feedback.rating == "down"]
            made = 0
            for up in sorted(ups, key=lambda m: -m[0].feedback.updated_at):
                for down in sorted(downs, key=lambda m: -m[0].feedback.updated_at):
                    if made >= self.options.max_pairs_per_prompt or _norm(up[2]) == _norm(down[2]):
                        continue
                    fb = up[0].feedback
                    pairs.append(Pair(up[1], up[2], down[2], "siblings", at=max(fb.updated_at,
                                      down[0].feedback.updated_at), user=self._user(fb.key_id, fb.user_id),
                                      key_id=fb.key_id, ids=[up[0].response.id, down[0].response.id]))
                    made += 1
        return pairs, unpaired

    # -- guards -----------------------------------------------------------------------------------
    def _cap(self, items: list[Any]) -> tuple[list[Any], int]:
        """Keep each user's and each key's newest examples up to the caps (offline items, which
        have no user, are not capped)."""
        per_user: Counter[str] = Counter()
        per_key: Counter[str] = Counter()
        kept, dropped = [], 0
        for item in sorted(items, key=lambda x: -x.at):
            if item.user:
                if per_user[item.user] >= self.options.max_per_user or per_key[item.key_id] >= self.options.max_per_key:
                    dropped += 1
                    continue
                per_user[item.user] += 1
                per_key[item.key_id] += 1
            kept.append(item)
        kept.sort(key=lambda x: x.at)
        return kept, dropped

    def _split(self, items: list[Any]) -> tuple[list[Any], list[Any]]:
        fraction = self.options.heldout_fraction
        if fraction <= 0 or not items:
            return list(items), []
        scores = {id(item): heldout_score(item.prompt) for item in items}
        heldout = [i for i in items if scores[id(i)] < fraction]
        prompts = {prompt_key(i.prompt) for i in items}
        if not heldout and len(prompts) >= 2:  # small rounds still get a held-out prompt
            lowest = min(items, key=lambda i: scores[id(i)])
            key = prompt_key(lowest.prompt)
            heldout = [i for i in items if prompt_key(i.prompt) == key]
        held = {id(i) for i in heldout}
        return [i for i in items if id(i) not in held], heldout


def _dedup(items: list[Any], key: Any) -> tuple[list[Any], int]:
    seen: dict[Any, Any] = {}
    for item in sorted(items, key=lambda x: x.at):
        seen[key(item)] = item  # the newest copy wins
    kept = sorted(seen.values(), key=lambda x: x.at)
    return kept, len(items) - len(kept)


def _dedup_unpaired(items: list[Unpaired]) -> tuple[list[Unpaired], int, int]:
    groups: dict[tuple[str, str], list[Unpaired]] = defaultdict(list)
    for item in items:
        groups[(prompt_key(item.prompt), _norm(item.completion))].append(item)
    kept, duplicates, conflicts = [], 0, 0
    for members in groups.values():
        ups = sum(m.label for m in members)
        downs = len(members) - ups
        if ups == downs and ups > 0 and downs > 0:
            conflicts += len(members)
            continue
        label = ups > downs
        newest = max((m for m in members if m.label == label), key=lambda m: m.at)
        kept.append(newest)
        duplicates += len(members) - 1
    kept.sort(key=lambda x: x.at)
    return kept, duplicates, conflicts


def require(method: str, data: PreferenceData, options: PreferenceSettings) -> None:
    """Raise :class:`InsufficientDataError` when ``data`` is too little for ``method``."""
    s = data.stats
    detail = (f"{s.get('votes', 0)} votes in the window; pairs by source {s.get('pairs', {}).get('by_source', {})}; "
              f"dropped {({k: v for k, v in s.get('dropped', {}).items() if v})}; held out for the gate: "
              f"{len(data.pairs_heldout)} pairs, {len(data.unpaired_heldout)} thumbs")
    fix = ("collect more feedback (regenerated answers voted up and down, or corrections), widen the data "
           "window, or lower the threshold in the job's `thresholds`")
    if method in ("dpo", "rlhf"):
        found = len(data.pairs) if method == "dpo" else len(data.pairs) + len(reward_pairs_from_unpaired(data))
        kind = "training pairs" if method == "dpo" else "training pairs for the reward model"
        if found < options.min_pairs:
            raise InsufficientDataError(f"too little data: a {method.upper()} round needs at least "
                                        f"{options.min_pairs} {kind} (thresholds.min_pairs), found {found} ({detail})",
                                        needed=options.min_pairs, found=found, fix=fix)
    if method == "kto":
        found = len(data.unpaired)
        ups = sum(u.label for u in data.unpaired)
        downs = found - ups
        if found < options.min_examples or min(ups, downs) < options.min_per_label:
            raise InsufficientDataError(
                f"too little data: a KTO round needs at least {options.min_examples} thumbs "
                f"(thresholds.min_examples) with at least {options.min_per_label} up and {options.min_per_label} "
                f"down (thresholds.min_per_label), found {found} ({ups} up, {downs} down; {detail})",
                needed=max(options.min_examples, 2 * options.min_per_label), found=found, fix=fix)


def reward_pairs_from_unpaired(data: PreferenceData, limit: int | None = None) -> list[Pair]:
    """Bradley-Terry pairs for the reward model from unpaired thumbs: each thumbs-up exchange
    against a thumbs-down one, round-robin, usually to *different* prompts (``rejected_prompt``
    holds the rejected side's own prompt). The reward model then learns what users like in
    general, which is all unpaired thumbs can tell it."""
    ups = [u for u in data.unpaired if u.label]
    downs = [u for u in data.unpaired if not u.label]
    if not ups or not downs:
        return []
    n = max(len(ups), len(downs)) if limit is None else min(limit, max(len(ups), len(downs)))
    out = []
    for i in range(n):
        up, down = ups[i % len(ups)], downs[i % len(downs)]
        out.append(Pair(up.prompt, up.completion, down.completion, "unpaired", at=max(up.at, down.at),
                        ids=up.ids + down.ids, rejected_prompt=down.prompt))
    return out
