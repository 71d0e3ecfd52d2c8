"""The web chat and the operator console in a real browser: Playwright drives Debian's headless
Chromium against a live server on loopback with the real SmolLM2, the real embedder and a real
index. Screenshots go to tests/artifacts/ (not in git)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import APP_KEY, OPERATOR_KEY

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("AGENTSTACK_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FIX = Path(__file__).resolve().parents[1] / "fixtures" / "alignment"
ANSWER = ".msg.assistant[data-response-id]"
DOCS = {
    "paris.md": "# Paris\n\nParis is the capital of France. The Eiffel Tower was finished in 1889. "
                "Markup in a document stays text: <img src=x onerror=\"window.__xss=1\"><b>bold</b>\n",
    "python.md": "# Python\n\nPython is a programming language created by Guido van Rossum in 1991.\n",
}


@pytest.fixture(scope="module")
def server(embedded_engine, tmp_path_factory):
    from agentstack.index.manager import IndexManager
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    root = tmp_path_factory.mktemp("web")
    (root / "docs").mkdir()
    for name, text in DOCS.items():
        (root / "docs" / name).write_text(text)
    (root / "facts.yaml").write_text("sources:\n  - path: docs\npii:\n  enabled: false\n")
    gate = {"advbench_path": str(FIX / "advbench"), "xstest_path": str(FIX / "xstest"),
            "general_prompts": str(FIX / "general_small.jsonl"), "safety_limit": 2, "xstest_limit": 2,
            "heldout_limit": 2, "max_new_tokens": 8, "safety_max_new_tokens": 8, "win_rate_scorer": "none"}
    settings = make_settings(root / "data", alignment={"worker_threads": 1, "poll_s": 0.3, "cancel_grace_s": 5.0,
                                                       "auto_promote": False, "gate": gate})
    IndexManager(settings).create("facts", spec_path=root / "facts.yaml")
    with LiveServer(create_app(settings, engine=embedded_engine)) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -c constraints.txt playwright)")
    if not Path(CHROMIUM).exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "status of 401" not in msg.text
            and "status of 4" not in msg.text else None)
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def sign_in(page, server, key: str, *, next_page: str = "/", user: str | None = None) -> None:
    page.goto(f"{server.url}{next_page}")
    assert page.url.startswith(f"{server.url}/login?next="), page.url  # no session yet: sent to sign in
    page.fill("#key", key)
    if user:
        page.fill("#user-id", user)
    page.click("#sign-in")
    page.wait_for_url(lambda url: "/login" not in url)
    page.wait_for_selector("body[data-ready=true]")


def settings(page, *, mode: str = "plain", max_tokens: int = 24) -> None:
    page.check(f"input[name=mode][value={mode}]")
    if not page.is_visible("#max-tokens"):
        page.click("#settings summary")
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#temperature", "0")
    page.dispatch_event("#settings-form", "change")


def ask(page, text: str) -> str:
    before = page.locator(ANSWER).count()
    page.fill("#message", text)
    page.keyboard.press("Enter")  # Enter sends
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length > n", arg=[ANSWER, before],
                           timeout=180_000)
    return page.locator(ANSWER).nth(before).get_attribute("data-response-id")


def test_rag_chat_streams_an_answer_with_sources(server, page):
    sign_in(page, server, APP_KEY, user="e2e-rag")
    settings(page, mode="rag", max_tokens=40)
    assert page.input_value("#index") == "facts"
    count_token_writes(page)
    rid = ask(page, "What is the capital of France?")
    writes = page.evaluate("window.__tokenWrites")
    answer = page.locator(ANSWER).last
    rec = server.app.state.services.responses.get(rid)
    if rec.grounding["decision"] == "answered":  # a checked sentence (or a held group of them) at a time;
        # the guard after the verifier may hold a sentence's last word ("Paris." could still become a
        # link) until the next sentence starts or the answer ends: one more write at most
        assert 1 <= writes <= sum(c["kept"] for c in rec.grounding["claims"]) + 1
    else:
        assert writes == 1  # the abstain message or the quotes, once: nothing shown was taken back
    assert rec.mode == "rag" and rec.user_id == "e2e-rag" and rec.sources
    assert answer.locator(".answer-text").inner_text().strip() == rec.answer.strip()
    first = answer.locator(".sources li").first
    assert "Paris" in first.locator(".src-title").inner_text()
    snippet = first.locator(".snippet").inner_text()
    assert "capital of France" in snippet and '<img src=x onerror="window.__xss=1"><b>bold</b>' in snippet
    assert answer.locator(".sources img, .sources b").count() == 0  # document markup stayed text
    assert page.evaluate("window.__xss") is None
    g = rec.grounding  # the verifier's verdict is shown: which sentences the sources support
    assert g and g["decision"] in ("answered", "abstained", "extracted")
    summary = answer.locator("details.grounding summary").inner_text()
    if g["decision"] == "answered":
        kept = [c for c in g["claims"] if c["kept"]]
        assert summary.startswith("Checked against the sources:") and f"of {len(g['claims'])} sentence" in summary
        assert answer.locator(".answer-text .claim.supported").count() == len(kept)
        assert answer.locator(".answer-text .claim.supported").first.inner_text() == rec.answer[kept[0]["start"]:kept[0]["end"]]
    else:
        assert summary.startswith(("Abstained", "Quoted from the sources"))
    citations = answer.locator("a.cite")
    if citations.count():  # a citation links to its source's snippet
        target = citations.first.get_attribute("href")
        citations.first.click()
        assert page.evaluate("location.hash") == target and page.locator(target).is_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 1500})  # the composer sticks to the window's bottom
    page.screenshot(path=str(ARTIFACTS / "chat.png"))


def count_token_writes(page) -> None:
    page.evaluate("""() => {  // count the token events as they land in the answer being written
        window.__tokenWrites = 0;
        new MutationObserver((records) => {
            for (const r of records) if (r.target.classList && r.target.classList.contains('streaming')) window.__tokenWrites++;
        }).observe(document.getElementById('transcript'), {childList: true, subtree: true});
    }""")


def test_thumbs_down_with_a_correction_lands_in_the_feedback_store(server, page):
    sign_in(page, server, APP_KEY, user="e2e-thumbs")
    settings(page)
    count_token_writes(page)
    rid = ask(page, "Name a colour.")
    assert page.evaluate("window.__tokenWrites") > 1  # a plain answer arrives in pieces, not at once
    answer = page.locator(ANSWER).last
    answer.get_by_role("button", name="Thumbs down").click()
    answer.get_by_label("Comment (optional)").fill("Too vague.")
    answer.get_by_label("Correction: the answer you wanted (optional)").fill("Blue.")
    answer.get_by_role("button", name="Send feedback").click()
    answer.get_by_text("Thanks, your feedback was saved.").wait_for()
    vote = server.app.state.services.alignment.feedback.for_response(rid, key_id="app1", user_id="e2e-thumbs")
    assert vote is not None and vote.rating == "down"
    assert vote.correction == "Blue." and vote.comment == "Too vague."
    assert answer.get_by_role("button", name="Thumbs down").get_attribute("aria-pressed") == "true"


def test_regenerate_adds_a_sibling_answer(server, page):
    sign_in(page, server, APP_KEY, user="e2e-regen")
    settings(page)
    first = ask(page, "Say something short about cats.")
    page.get_by_role("button", name="Regenerate").click()
    page.get_by_text("Answer 2 of 2").wait_for(timeout=180_000)
    second = page.locator(ANSWER).last.get_attribute("data-response-id")
    assert second != first
    rec = server.app.state.services.responses.get(second)
    assert rec.parent_id == first and rec.conversation_id == server.app.state.services.responses.get(first).conversation_id
    page.get_by_role("button", name="Previous answer").click()
    assert page.locator(ANSWER).last.get_attribute("data-response-id") == first
    page.get_by_text("Answer 1 of 2").wait_for()


def test_errors_are_shown_in_plain_words(server, page):
    sign_in(page, server, APP_KEY, user="e2e-errors")
    busy = {"error": {"message": "the engine queue is full", "type": "rate_limit_error", "code": "overloaded",
                      "param": None}, "request_id": "req-1"}
    page.route("**/v1/chat", lambda route: route.fulfill(status=429, headers={"Retry-After": "3"},
                                                         content_type="application/json", body=json.dumps(busy)))
    page.fill("#message", "Hello?")
    page.keyboard.press("Enter")
    error = page.get_by_role("alert")
    error.get_by_text("The model is busy, try again (in about 3 s).").wait_for()
    assert page.input_value("#message") == "Hello?"  # kept for the retry
    page.unroute("**/v1/chat")
    failed = {"error": {"message": "generation failed", "type": "server_error", "code": "agentstack_error",
                        "param": None, "status": 500}}
    stream = 'event: token\ndata: {"text": "Hel"}\n\nevent: error\ndata: ' + json.dumps(failed) + "\n\n"
    page.route("**/v1/chat", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=stream))
    page.keyboard.press("Enter")
    error.get_by_text("Something went wrong on the server. Try again.").wait_for()


def test_react_steps_and_citations_render_under_the_answer(server, page):
    """Rendering only: a scripted stream in the shape /v1/chat sends for react (no model run)."""
    sign_in(page, server, APP_KEY, user="e2e-react")
    steps = [{"n": 1, "thought": "I should compute it.", "action": "calculator", "action_input": "6*7",
              "observation": "42 <script>window.__xss=1</script>", "error": None, "latency_ms": 5.0},
             {"n": 2, "thought": "I know the answer.", "action": "final_answer", "action_input": "42",
              "observation": "", "error": None, "latency_ms": 3.0}]
    done = {"id": "resp-scripted", "conversation_id": "conv-scripted", "parent_id": None, "turn": 1, "mode": "react",
            "answer": "It is 42 [1]. See [the notes](javascript:alert) and [2].",
            "sources": [{"n": 1, "index": "facts", "chunk_id": 7, "doc_id": "d1", "title": "Arithmetic",
                         "source": "math.md", "score": 0.9, "snippet": "Six times seven is 42."}],
            "trace": steps, "model_version": "SmolLM2-135M-Instruct",
            "finish_reason": "stop", "usage": {}, "created_at": time.time()}
    body = "".join(f"event: step\ndata: {json.dumps(s)}\n\n" for s in steps)
    body += 'event: token\ndata: {"text": "It is 42."}\n\n' + f"event: done\ndata: {json.dumps(done)}\n\n"
    page.route("**/v1/chat", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body))
    page.keyboard.press("Alt+3")
    ask(page, "What is 6 times 7?")
    answer = page.locator(ANSWER).last
    details = answer.locator("details.steps")
    assert details.get_attribute("open") is None and "ReAct steps (2)" in details.locator("summary").inner_text()
    details.locator("summary").click()
    assert details.locator("li").first.get_by_text("calculator(6*7)").is_visible()
    assert "<script>" in details.locator("li").first.inner_text() and page.evaluate("window.__xss") is None
    cite = answer.locator("a.cite")
    assert cite.count() == 1 and cite.get_attribute("href") == "#resp-scripted-src-1"  # [2] has no source
    cite.click()
    assert page.locator("#resp-scripted-src-1").get_by_text("Six times seven is 42.").is_visible()
    assert answer.locator(".answer-text a").count() == 1  # the javascript: link stayed text
    assert "See the notes and [2]." in answer.locator(".answer-text").inner_text()


def test_unsupported_sentences_are_marked_in_the_answer(server, page):
    """Rendering only: a stream in the shape /v1/chat sends for rag with grounding.unsupported=mark."""
    sign_in(page, server, APP_KEY, user="e2e-grounding")
    answer_text = "The tower was finished in 1889 [1]. It was painted by Picasso."
    claims = [{"text": "The tower was finished in 1889 [1].", "support": 0.91, "answers": 0.72, "supported": True,
               "answers_question": True, "kept": True, "start": 0, "end": 35, "source": 1, "citations": [1],
               "citations_dropped": []},
              {"text": "It was painted by Picasso.", "support": 0.12, "answers": 0.3, "supported": False,
               "answers_question": False, "kept": True, "start": 36, "end": 62, "source": 1, "citations": [],
               "citations_dropped": []},
              {"text": "The tower was finished in 1889.", "support": 0.9, "answers": 0.7, "supported": True,
               "answers_question": True, "kept": False, "repeats": 0, "source": 1, "citations": [],
               "citations_dropped": []}]
    done = {"id": "resp-marked", "conversation_id": "conv-marked", "parent_id": None, "turn": 0, "mode": "rag",
            "answer": answer_text, "trace": [], "model_version": "SmolLM2-135M-Instruct", "finish_reason": "stop",
            "sources": [{"n": 1, "index": "facts", "chunk_id": 1, "doc_id": "d1", "title": "Tower", "source": "t.md",
                         "score": 0.8, "snippet": "The tower was finished in 1889."}],
            "usage": {}, "created_at": time.time(),
            "grounding": {"decision": "answered", "mode": "rag", "claims": claims, "answer_score": 0.72,
                          "unsupported": "mark", "unsupported_claims": 1}}
    body = ("event: token\ndata: " + json.dumps({"text": answer_text}) + "\n\n"
            + f"event: done\ndata: {json.dumps(done)}\n\n")
    page.route("**/v1/chat", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body))
    ask(page, "When was the tower finished?")
    answer = page.locator(ANSWER).last
    good, bad = answer.locator(".claim.supported"), answer.locator(".claim.unsupported")
    assert good.count() == 1 and bad.count() == 1
    assert good.inner_text() == "The tower was finished in 1889 [1]." and good.locator("a.cite").count() == 1
    assert bad.get_attribute("title").startswith("Not supported by the sources")
    assert "It was painted by Picasso." in bad.inner_text()
    details = answer.locator("details.grounding")
    assert details.locator("summary").inner_text() == ("Checked against the sources: 2 of 3 sentences supported. "
                                                       "1 repeated sentence removed. Best answer score 0.72.")
    details.locator("summary").click()
    assert details.locator("li").nth(1).get_by_text("Not supported (marked)").is_visible()
    assert details.locator("li.repeat").get_by_text("Repeats sentence 1 (removed)").is_visible()
    assert answer.locator(".answer-text").inner_text().count("finished in 1889") == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-grounding.png"))


def test_an_operator_manages_an_index(server, page, tmp_path):
    sign_in(page, server, OPERATOR_KEY, next_page="/admin")
    page.get_by_role("link", name="Indexes").click()
    page.get_by_role("heading", name="Documents (2)").wait_for()
    note = tmp_path / "rome.md"
    note.write_text("# Rome\n\nRome is the capital of Italy.\n")
    page.set_input_files("#ix-files", str(note))
    page.get_by_role("button", name="Upload").click()
    page.get_by_role("heading", name="Documents (3)").wait_for()
    assert server.app.state.services.indexes.open("facts").documents()[1] == 3
    page.get_by_role("button", name="Delete Rome").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Delete").click()
    page.get_by_role("heading", name="Documents (2)").wait_for()
    assert server.app.state.services.indexes.open("facts").documents()[1] == 2
    page.get_by_role("link", name="Evaluation reports").click()
    page.get_by_text("No evaluation report yet.").wait_for()
    page.get_by_role("link", name="Audit log").click()
    page.get_by_role("cell", name="index.delete_document").first.wait_for()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-audit.png"), full_page=True)


def test_an_app_session_cannot_open_the_console(server, page):
    sign_in(page, server, APP_KEY, next_page="/admin")
    assert page.url == f"{server.url}/"  # an app key is sent to the chat instead
    assert page.locator("#nav-console").is_hidden()
    response = page.goto(f"{server.url}/admin")
    assert response.status == 403 and page.get_by_role("heading", name="Operators only").is_visible()
    status = page.evaluate("""async () => (await fetch('/v1/admin/models', {credentials: 'same-origin'})).status""")
    assert status == 403
    page.get_by_role("button", name="Sign out and use another key").click()
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto(f"{server.url}/")
    assert page.url.startswith(f"{server.url}/login")  # the session is gone


def _seed_votes(server, n: int = 6) -> None:
    """``n`` prompts, each with a short (voted up) and a long (voted down) answer."""
    from agentstack.history.store import ResponseRecord

    svc = server.app.state.services
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(n):
            user = f"voter{i % 3}"
            msgs = [{"role": "user", "content": f"Tell me about the number {i}."}]
            long = f"The number {i} is a number that numbers things, and it goes on and on about it at length."
            for j, text in enumerate([f"{i} is a number.", long]):
                rid = f"resp-web-{i}-{j}"
                svc.responses.record(ResponseRecord(id=rid, key_id="app1", user_id=user, endpoint="chat",
                                                    model="agentstack", model_version=svc.router.active,
                                                    messages=msgs, params={"max_tokens": 32}, answer=text,
                                                    parent_id=None if j == 0 else f"resp-web-{i}-0"))
                r = client.post("/v1/feedback", json={"response_id": rid, "rating": "up" if j == 0 else "down"},
                                headers={"Authorization": f"Bearer {APP_KEY}", "X-User-Id": user})
                assert r.status_code == 200, r.text


def test_an_operator_starts_a_tiny_alignment_job_and_watches_it(server, page):
    _seed_votes(server)
    sign_in(page, server, OPERATOR_KEY, next_page="/admin")
    page.wait_for_selector("body[data-view=feedback]")
    total = server.app.state.services.alignment.feedback.stats()["total"]
    assert total["up"] >= 6 and total["down"] >= 6
    page.get_by_text(f"{total['total']} votes in the last 30 days: {total['up']} up, {total['down']} down").wait_for()
    assert page.locator("#fb-body svg[role=img]").count() == 2  # up ratio and votes, plotted
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-feedback.png"), full_page=True)

    page.get_by_role("link", name="Alignment jobs").click()
    page.wait_for_selector("body[data-view=jobs]")
    page.click("#job-new summary")
    form = page.locator("#job-form")
    form.get_by_label("Method").select_option("dpo")
    form.get_by_label("Max steps").fill("2")
    form.get_by_label("Batch size").fill("2")
    form.get_by_label("LoRA rank").fill("4")
    form.get_by_label("Max length (tokens)").fill("96")
    form.get_by_label("Min pairs").fill("4")
    form.get_by_label("Held-out fraction").fill("0.2")
    form.get_by_label("After the gate").select_option("false")
    form.get_by_role("button", name="Start job").click()
    badge = page.locator("#job-status .badge")
    badge.wait_for()
    seen = [badge.inner_text()]
    assert seen[0] in ("queued", "running"), seen
    job_id = page.locator("#job-detail h2").inner_text().removeprefix("Job ")
    assert server.app.state.services.alignment.jobs.jobs.get(job_id).spec["hyperparameters"]["max_steps"] == 2
    deadline = time.monotonic() + 180
    while seen[-1] == "queued" and time.monotonic() < deadline:  # the page polls; the worker starts
        page.wait_for_timeout(300)
        seen.append(badge.inner_text())
    assert seen[-1] != "queued", seen
    if seen[-1] in ("running",):
        page.screenshot(path=str(ARTIFACTS / "console-job.png"), full_page=True)
        page.get_by_role("button", name="Cancel job").click()
        page.wait_for_function("() => ['cancelled', 'failed', 'succeeded'].includes("
                               "document.querySelector('#job-status .badge').textContent)", timeout=120_000)
        seen.append(badge.inner_text())
    assert seen[-1] in ("cancelled", "failed", "succeeded"), seen
    job = server.app.state.services.alignment.jobs.jobs.get(job_id)
    assert job.status == seen[-1]

    # A finished round's metrics and gate checks, in the shapes the worker writes, are plotted and tabled.
    finished = _finished_job_row(server)
    page.get_by_role("button", name="Refresh").click()
    page.get_by_role("button", name=finished).click()
    page.locator("#job-detail h2", has_text=finished).wait_for()
    charts = page.locator("#job-detail svg[role=img]")
    assert charts.count() == 3 and page.locator("#job-detail svg polyline").count() == 3  # loss, margin, KL
    assert "Loss" in charts.first.get_attribute("aria-label")
    gate_rows = page.locator("#job-detail table").last.locator("tbody tr")
    assert gate_rows.count() == 2 and "kl" in gate_rows.first.inner_text()

    page.get_by_role("link", name="Model versions").click()  # rollback asks before acting
    page.get_by_role("button", name="Roll back…").click()
    dialog = page.get_by_role("dialog", name="Roll back the served model?")
    dialog.wait_for()
    page.keyboard.press("Escape")
    dialog.wait_for(state="detached")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_role("cell", name="alignment.job.submit").first.wait_for()
    assert page.get_by_role("cell", name="model.rollback").count() == 0


def _finished_job_row(server) -> str:
    jobs = server.app.state.services.alignment.jobs.jobs
    job = jobs.create(method="dpo", spec={"method": "dpo"}, created_by="op1")
    history = [{"step": s, "loss": 0.69 - 0.05 * s, "rewards/margins": 0.02 * s, "kl": 0.001 * s} for s in (1, 2, 3)]
    checks = [{"name": "kl", "status": "pass", "value": 0.003, "threshold": 0.15, "detail": {}},
              {"name": "win_rate", "status": "fail", "value": 0.4, "threshold": 0.5, "detail": {}}]
    jobs.update(job.id, status="succeeded", stage="done", finished_at=time.time(),
                metrics={"dpo": {"history": history}, "latest": {"run": "dpo", **history[-1]}},
                gate={"passed": False, "summary": "REJECT kl=0.003:pass, win_rate=0.4:fail", "checks": checks})
    return job.id


def test_the_chat_works_from_the_keyboard_alone(server, page):
    page.goto(f"{server.url}/login?next=/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("document.activeElement.id") == "key"  # focus starts in the key field
    page.keyboard.type(APP_KEY)
    page.keyboard.press("Tab")
    page.keyboard.type("e2e-keys")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("document.activeElement.id") == "message"

    def tab_to(predicate_js: str, limit: int = 60, back: bool = False) -> None:
        for _ in range(limit):
            if page.evaluate(f"(() => {{ const el = document.activeElement; return {predicate_js}; }})()"):
                return
            page.keyboard.press("Shift+Tab" if back else "Tab")
        raise AssertionError(f"never reached {predicate_js} with the keyboard")

    # Generation settings: open them and set max tokens, keyboard only.
    tab_to("el.tagName === 'SUMMARY'", back=True)
    page.keyboard.press("Enter")
    tab_to("el.id === 'max-tokens'")
    page.keyboard.press("Control+A")
    page.keyboard.type("12")
    assert page.input_value("#max-tokens") == "12"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"  # focus is visible
    page.keyboard.press("Alt+3")  # ReAct
    assert page.is_checked("input[name=mode][value=react]")
    page.keyboard.press("Alt+1")  # back to plain
    assert page.is_checked("input[name=mode][value=plain]")
    tab_to("el.tagName === 'SUMMARY'", back=True)
    page.keyboard.press("/")  # "/" jumps to the message box from anywhere but a text field
    assert page.evaluate("document.activeElement.id") == "message"
    page.keyboard.type("Say hello.")
    page.keyboard.press("Shift+Enter")  # a new line, not a send
    page.keyboard.type("Thanks.")
    assert page.input_value("#message") == "Say hello.\nThanks."
    page.keyboard.press("Enter")
    page.wait_for_selector(ANSWER, timeout=180_000)
    rid = page.locator(ANSWER).last.get_attribute("data-response-id")

    tab_to("el.getAttribute('aria-label') === 'Thumbs up'")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement.id.startsWith('comment-')")  # the comment box takes focus
    page.keyboard.type("Friendly.")
    tab_to("el.textContent === 'Send feedback'")
    page.keyboard.press("Enter")
    page.get_by_text("Thanks, your feedback was saved.").wait_for()
    vote = server.app.state.services.alignment.feedback.for_response(rid, key_id="app1", user_id="e2e-keys")
    assert vote.rating == "up" and vote.comment == "Friendly."

    page.keyboard.press("Alt+N")  # a new conversation
    assert page.locator(ANSWER).count() == 0 and page.evaluate("document.activeElement.id") == "message"
    tab_to("el.classList.contains('conv')", back=True)  # the history, back one step
    page.keyboard.press("Enter")
    page.wait_for_selector(ANSWER)
    assert page.locator(ANSWER).last.get_attribute("data-response-id") == rid
    tab_to("el.tagName === 'BUTTON'")
    page.keyboard.press("?")
    page.get_by_role("heading", name="Keyboard shortcuts").wait_for()
    page.keyboard.press("Escape")
    assert page.locator("#shortcuts").is_hidden()
