"""The link guard checked against Chromium (Debian's, headless, driven by Playwright):

* every destination of the grid (``tests/unit/link_grid.py``) is resolved by Chromium's own URL
  parser, ``new URL(href, base)``; the grid's hand-written label and the guard's verdict (ada-url)
  must both agree with it, host for host;
* every guarded answer of the grid, in every form, rendered by a lax Markdown renderer and loaded
  into a page whose base is the rendering page's, makes Chromium request no refused host, and
  leaves no link whose resolved URL (read back from the DOM) is refused, except a linkifier's
  link on a bare domain name whose target is exactly its visible text (kept by design; counted).

No ada-url verdict is used to decide what Chromium did: the allowlist is normalised by Chromium
too, and the checks below compare Chromium's hostnames with it.
"""

from __future__ import annotations

import json

import pytest

from agentstack.orchestrators.guards import AnswerGuard, GuardConfig
from agentstack.orchestrators.link_policy import LinkPolicy
from tests.e2e.test_web import browser  # noqa: F401  (the module's Chromium fixture)
from tests.unit.link_grid import ALLOWED, BASE, FORMS, KEEP, REMOVE, cases, render, renderer

pytestmark = pytest.mark.e2e

RESOLVE = """([hrefs, base]) => hrefs.map(h => {
  try { const u = new URL(h, base); return [u.protocol, u.hostname, u.pathname, u.search + u.hash]; }
  catch (e) { return null; }
})"""


@pytest.fixture(scope="module")
def chromium_page(browser):  # noqa: F811
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def allowed_hosts(chromium_page):
    """The allowlist and the base host as Chromium normalises them."""
    parsed = chromium_page.evaluate(RESOLVE, [[f"https://{h}/" for h in (*ALLOWED, BASE.split("/")[2])], BASE])
    hosts = [p[1] for p in parsed]
    return tuple(hosts[:-1]), hosts[-1]


def chromium_allows(parsed, allowed: tuple[str, ...], base_host: str) -> bool:
    """The guard's policy, applied to Chromium's reading of a URL: http(s) to the base's host or an
    allowlisted one, or a mailto: with nothing filled in."""
    if parsed is None:
        return False
    protocol, host, _path, rest = parsed
    if protocol == "mailto:":
        return "?" not in rest
    host = host.rstrip(".")
    return protocol in ("http:", "https:") and (host == base_host or any(host == a or host.endswith("." + a)
                                                                          for a in allowed))


def visible_bare_domain(parsed, text: str, text_host) -> bool:
    """A linkifier's link on a bare domain name (``example.com``): its target is exactly the text
    the reader sees, with no path or data. The guard leaves these (docs/security.md)."""
    if parsed is None or text_host is None:
        return False
    protocol, host, path, rest = parsed
    return protocol == "http:" and path == "/" and not rest and host == text_host[1] and "/" not in text.strip()


def test_grid_labels_and_guard_verdicts_agree_with_chromium(chromium_page, allowed_hosts):
    allowed, base_host = allowed_hosts
    grid = cases()
    parsed = chromium_page.evaluate(RESOLVE, [[c.href for c in grid], BASE])
    policy = LinkPolicy(ALLOWED, BASE)
    wrong_label, wrong_verdict, wrong_host = [], [], []
    for case, result in zip(grid, parsed):
        ok = chromium_allows(result, allowed, base_host)
        if case.expected != (KEEP if ok else REMOVE):
            wrong_label.append(f"{case}: Chromium {result}")
        verdict = policy.judge(case.href)
        if verdict.allowed != ok:
            wrong_verdict.append(f"{case}: Chromium {result}, guard {verdict}")
        if result is not None and result[0] in ("http:", "https:") and verdict.host != result[1].rstrip("."):
            wrong_host.append(f"{case}: Chromium host {result[1]!r}, guard {verdict.host!r}")
    assert not wrong_label, "grid labels Chromium disagrees with:\n" + "\n".join(wrong_label)
    assert not wrong_verdict, "guard verdicts Chromium disagrees with:\n" + "\n".join(wrong_verdict)
    assert not wrong_host, "\n".join(wrong_host)
    assert sum(c.expected == KEEP for c in grid) > 250 and sum(c.expected == REMOVE for c in grid) > 250


COLLECT = """() => {
  const out = [];
  for (const a of document.querySelectorAll('a[href]')) out.push(['a', a.href, a.textContent]);
  for (const img of document.querySelectorAll('img')) {
    if (img.getAttribute('src') !== null) out.push(['img', img.src]);
    const set = img.getAttribute('srcset');
    if (set) for (const c of set.split(',')) {
      const url = c.trim().split(/\\s+/)[0];
      if (url) { try { out.push(['srcset', new URL(url, document.baseURI).href]); } catch (e) {} }
    }
  }
  return out;
}"""


def _guarded(text: str) -> str:
    guard = AnswerGuard(GuardConfig(allowed_hosts=ALLOWED))
    return guard.feed(text) + guard.finish()


@pytest.mark.parametrize("form", FORMS)
def test_guarded_answers_make_chromium_fetch_and_link_only_allowed_hosts(browser, allowed_hosts, form):  # noqa: F811
    allowed, base_host = allowed_hosts
    md = renderer()
    sections, kept = [], 0
    for case in cases():
        text = render(case, form)
        if text is None:
            continue
        sections.append(f'<section id="c{case.n}">{md.render(_guarded(text))}</section>')
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []

    def record(route):
        requested.append(route.request.url)
        route.abort()

    page.route("**/*", record)
    page.set_content(f'<!doctype html><html><head><base href="{BASE}"></head><body>{"".join(sections)}</body></html>',
                     wait_until="load")
    page.wait_for_timeout(500)
    links = page.evaluate(COLLECT)
    texts = [item[2] if len(item) > 2 else "" for item in links]
    to_check = [item[1] for item in links] + requested
    parsed = page.evaluate(RESOLVE, [to_check, BASE])
    text_hosts = page.evaluate(RESOLVE, [[f"http://{t.strip()}" for t in texts], BASE])
    context.close()
    refused, bare_domains = [], 0
    for i, (url, p) in enumerate(zip(to_check, parsed)):
        if chromium_allows(p, allowed, base_host):
            continue
        if i < len(links) and links[i][0] == "a" and visible_bare_domain(p, texts[i], text_hosts[i]):
            bare_domains += 1
            continue
        refused.append(f"{url} -> {p}")
    assert not refused, f"{form}: Chromium would go to refused destinations:\n" + "\n".join(refused[:30])
    kept = sum(1 for item in links if "M" in item[1])
    assert kept >= 20 or form == "bare", f"{form}: only {kept} allowed links survived (the grid keeps many)"
    print(json.dumps({"form": form, "links": len(links), "requests": len(requested), "kept": kept,
                      "bare_domains": bare_domains}))
