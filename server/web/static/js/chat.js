// The chat page: streaming answers (typed SSE: source, token, step, done, error), modes, index
// picker, generation settings, sources, ReAct steps, thumbs with comment/correction, regenerate,
// and the conversation history. Every model or document text is written as text nodes.

import { ApiError, del, get, plainMessage, post, startPage, stream } from "./api.js";
import { $, $$, clear, confirmDialog, fmtTime, h, replace, s } from "./dom.js";
import { renderAnswer, sourceAnchor } from "./render.js";

const state = {
  conversationId: null,
  turns: [], // {user: text, answers: [response], shown: index, el}
  controller: null,
  votes: new Map(), // response id -> rating
};
const SETTINGS_KEY = "agentstack.chat.settings";
// Thumb outlines from the Feather icon set (MIT licence).
const THUMB_UP = "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3";
const THUMB_DOWN = "M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17";

function icon(path) {
  return s("svg", { viewBox: "0 0 24 24", width: 16, height: 16, "aria-hidden": "true", class: "icon" },
    s("path", { d: path, fill: "none", stroke: "currentColor", "stroke-width": 2, "stroke-linecap": "round", "stroke-linejoin": "round" }));
}

// -- settings ---------------------------------------------------------------------------------------
function mode() {
  return $("input[name=mode]:checked").value;
}

function numberField(id) {
  const value = $(`#${id}`).value.trim();
  return value === "" ? undefined : Number(value);
}

function params() {
  const out = {
    temperature: numberField("temperature"), top_p: numberField("top-p"), top_k: numberField("top-k"),
    max_tokens: numberField("max-tokens"), seed: numberField("seed"),
  };
  return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined && !Number.isNaN(v)));
}

function request(message) {
  const body = { message, mode: mode(), params: params() };
  if (state.conversationId) body.conversation_id = state.conversationId;
  const index = $("#index").value;
  if (body.mode !== "plain" && index) body.index = index;
  if (body.mode !== "plain") {
    body.top_k = numberField("top-k-retrieval");
    body.grounding = { enabled: $("#grounding-on").checked, unsupported: $("#grounding-mark").checked ? "mark" : "remove" };
  }
  return body;
}

function saveSettings() {
  const data = { mode: mode(), index: $("#index").value };
  for (const id of ["top-k-retrieval", "temperature", "top-p", "top-k", "max-tokens", "seed"]) data[id] = $(`#${id}`).value;
  for (const id of ["grounding-on", "grounding-mark"]) data[id] = $(`#${id}`).checked;
  try { localStorage.setItem(SETTINGS_KEY, JSON.stringify(data)); } catch { /* storage off */ }
  describeMode();
}

function restoreSettings() {
  let data = null;
  try { data = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "null"); } catch { /* ignore */ }
  if (!data) return;
  const radio = $(`input[name=mode][value="${CSS.escape(data.mode || "plain")}"]`);
  if (radio && !radio.disabled) radio.checked = true;
  if (data.index && [...$("#index").options].some((o) => o.value === data.index)) $("#index").value = data.index;
  for (const id of ["top-k-retrieval", "temperature", "top-p", "top-k", "max-tokens", "seed"]) {
    if (typeof data[id] === "string") $(`#${id}`).value = data[id];
  }
  for (const id of ["grounding-on", "grounding-mark"]) {
    if (typeof data[id] === "boolean") $(`#${id}`).checked = data[id];
  }
}

function describeMode() {
  const m = mode();
  const index = $("#index").value;
  $("#index").disabled = m === "plain";
  $("#top-k-retrieval").disabled = m === "plain";
  $("#mode-line").textContent = m === "plain" ? "Mode: plain chat."
    : `Mode: ${m === "rag" ? "RAG" : "ReAct"}${index ? ` over index “${index}”` : ""}.`;
}

function setMode(value) {
  const radio = $(`input[name=mode][value="${value}"]`);
  if (radio && !radio.disabled) {
    radio.checked = true;
    saveSettings();
    status(`Mode: ${value}`);
  }
}

async function loadIndexes(who) {
  const select = $("#index");
  let rows = [];
  try {
    rows = (await get("/v1/indexes")).data.filter((r) => !r.error);
  } catch (err) {
    showError(err);
  }
  clear(select);
  for (const r of rows) {
    select.append(h("option", { value: r.name }, `${r.name} (${r.documents} documents)`));
  }
  if (!rows.length) {
    select.append(h("option", { value: "" }, "no index available"));
    $("input[name=mode][value=rag]").disabled = true;
  }
  if (who.indexes) select.title = `This key may use: ${who.indexes.join(", ")}`;
}

// -- messages ---------------------------------------------------------------------------------------
function status(text) {
  $("#status").textContent = text;
}

function showError(err) {
  const box = $("#error");
  const text = err instanceof ApiError || err instanceof Error ? plainMessage(err) : String(err);
  box.hidden = false;
  replace(box, text);
}

function hideError() {
  $("#error").hidden = true;
  clear($("#error"));
}

// -- rendering an answer ------------------------------------------------------------------------------
function sourcesView(answer) {
  if (!answer.sources || !answer.sources.length) return null;
  return h("section", { class: "sources", "aria-label": "Sources" },
    h("h4", {}, "Sources"),
    h("ol", {}, answer.sources.map((src) => h("li", { id: sourceAnchor(answer.id, src.n), tabindex: "-1" },
      h("span", { class: "src-title" }, `[${src.n}] ${src.title || src.doc_id || "untitled"}`), " ",
      h("span", { class: "muted" }, `${src.source || ""}${src.index ? ` · index ${src.index}` : ""}${
        typeof src.score === "number" ? ` · score ${src.score.toFixed(3)}` : ""}`),
      src.snippet ? h("blockquote", { class: "snippet" }, src.snippet.replace(/\n{2,}/g, "\n")) : null))));
}

function groundingSummary(g) {
  const claims = g.claims || [];
  const supported = claims.filter((c) => c.supported).length;
  const score = typeof g.answer_score === "number" ? ` Best answer score ${g.answer_score.toFixed(2)}.` : "";
  const repeats = claims.filter((c) => typeof c.repeats === "number").length;
  const repeated = repeats ? ` ${repeats} repeated sentence${repeats === 1 ? "" : "s"} removed.` : "";
  if (g.decision === "answered") {
    return `Checked against the ${g.mode === "react" ? "tool results" : "sources"}: ${supported} of ${claims.length} sentence${claims.length === 1 ? "" : "s"} supported.${repeated}${score}`;
  }
  if (g.decision === "abstained") return `Abstained: ${g.reason || "no supported sentence answers the question"}.`;
  if (g.decision === "extracted") return "Quoted from the sources: no sentence of the generated answer was supported and answered the question.";
  if (g.decision === "off") return "Not checked against the sources (the verifier is off for this answer).";
  return "";
}

function groundingView(answer) {
  const g = answer.grounding;
  if (!g || !g.decision || g.decision === "unchecked") return null;
  const claims = g.claims || [];
  return h("details", { class: `grounding ${g.decision}` },
    h("summary", {}, groundingSummary(g)),
    claims.length ? h("ol", {}, claims.map((c) => h("li", { class: typeof c.repeats === "number" ? "repeat" : (c.supported ? "supported" : "unsupported") },
      h("strong", {}, typeof c.repeats === "number" ? `Repeats sentence ${c.repeats + 1} (removed)`
        : (c.supported ? "Supported" : (c.kept ? "Not supported (marked)" : "Not supported (removed)"))),
      ` · support ${c.support.toFixed(2)}`, g.mode === "rag" ? ` · answers ${c.answers.toFixed(2)}` : "",
      c.source ? ` · best source [${c.source}]` : "",
      c.citations_dropped && c.citations_dropped.length ? ` · citation ${c.citations_dropped.map((n) => `[${n}]`).join(", ")} dropped` : "",
      h("blockquote", { class: "claim-text" }, c.text)))) : null);
}

function stepView(step) {
  return h("li", {},
    step.thought ? h("p", {}, h("strong", {}, "Thought: "), step.thought) : null,
    step.action ? h("p", {}, h("strong", {}, "Action: "), h("code", {}, `${step.action}(${step.action_input || ""})`)) : null,
    step.observation ? h("p", {}, h("strong", {}, "Observation: "), h("span", { class: "obs" }, step.observation)) : null,
    step.error ? h("p", { class: "error-text" }, h("strong", {}, "Error: "), step.error) : null);
}

function stepsView(trace, open = false) {
  if (!trace || !trace.length) return null;
  return h("details", { class: "steps", open },
    h("summary", {}, `ReAct steps (${trace.length})`),
    h("ol", {}, trace.map(stepView)));
}

function feedbackView(answer) {
  const rated = state.votes.get(answer.id);
  const live = h("p", { class: "muted small", role: "status" });
  const comment = h("textarea", { id: `comment-${answer.id}`, rows: 2, maxlength: 8000 });
  const correction = h("textarea", { id: `correction-${answer.id}`, rows: 3, maxlength: 8000 });
  const correctionLabel = h("label", { for: `correction-${answer.id}` }, "Correction: the answer you wanted (optional)");
  const form = h("form", { class: "feedback-form", hidden: true, "aria-label": "Feedback details" },
    h("label", { for: `comment-${answer.id}` }, "Comment (optional)"), comment,
    correctionLabel, correction,
    h("div", { class: "row" }, h("button", { type: "submit" }, "Send feedback"),
      h("button", { type: "button", class: "secondary", onclick: () => { form.hidden = true; } }, "Close")));
  const up = h("button", { type: "button", class: "thumb", "aria-pressed": String(rated === "up"), "aria-label": "Thumbs up", title: "Thumbs up" }, icon(THUMB_UP), " Up");
  const down = h("button", { type: "button", class: "thumb", "aria-pressed": String(rated === "down"), "aria-label": "Thumbs down", title: "Thumbs down" }, icon(THUMB_DOWN), " Down");
  let rating = rated || null;

  async function send(extra = {}) {
    try {
      await post("/v1/feedback", { response_id: answer.id, rating, ...extra });
      state.votes.set(answer.id, rating);
      up.setAttribute("aria-pressed", String(rating === "up"));
      down.setAttribute("aria-pressed", String(rating === "down"));
      live.textContent = extra.comment || extra.correction ? "Thanks, your feedback was saved." : `Saved: thumbs ${rating}.`;
      return true;
    } catch (err) {
      live.textContent = plainMessage(err);
      return false;
    }
  }

  async function vote(value) {
    rating = value;
    correctionLabel.hidden = correction.hidden = value !== "down";
    if (await send()) {
      form.hidden = false;
      comment.focus();
    }
  }

  up.addEventListener("click", () => vote("up"));
  down.addEventListener("click", () => vote("down"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const extra = {};
    if (comment.value.trim()) extra.comment = comment.value.trim();
    if (rating === "down" && correction.value.trim()) extra.correction = correction.value.trim();
    if (await send(extra)) {
      form.hidden = true;
      (rating === "up" ? up : down).focus();
    }
  });
  return h("div", { class: "feedback" }, h("div", { class: "row", role: "group", "aria-label": "Rate this answer" }, up, down), form, live);
}

function answerView(turn) {
  const answer = turn.answers[turn.shown];
  const n = turn.answers.length;
  const pager = n > 1 ? h("div", { class: "row pager", role: "group", "aria-label": "Answers to this message" },
    h("button", { type: "button", class: "secondary small", disabled: turn.shown === 0, "aria-label": "Previous answer",
      onclick: () => showSibling(turn, turn.shown - 1) }, "‹"),
    h("span", {}, `Answer ${turn.shown + 1} of ${n}`),
    h("button", { type: "button", class: "secondary small", disabled: turn.shown === n - 1, "aria-label": "Next answer",
      onclick: () => showSibling(turn, turn.shown + 1) }, "›")) : null;
  const regenerate = h("button", { type: "button", class: "secondary", onclick: () => regenerateAnswer(turn) }, "Regenerate");
  return h("div", { class: "msg assistant", "data-response-id": answer.id },
    h("h3", { class: "visually-hidden" }, "Answer"),
    pager,
    h("div", { class: "answer-text" }, renderAnswer(answer.answer, (answer.sources || []).length, answer.id,
      answer.grounding?.claims)),
    groundingView(answer),
    sourcesView(answer),
    stepsView(answer.trace),
    h("p", { class: "muted small" }, `${answer.model_version || ""}${answer.finish_reason === "length" ? " · cut at max tokens" : ""}`),
    h("div", { class: "row actions" }, feedbackView(answer), regenerate));
}

function showSibling(turn, index) {
  turn.shown = index;
  const view = answerView(turn);
  turn.el.querySelector(".msg.assistant").replaceWith(view);
  view.querySelector(".pager button:not([disabled])")?.focus();
}

function turnView(turn) {
  const article = h("article", { class: "turn" },
    h("div", { class: "msg user" }, h("h3", { class: "visually-hidden" }, "You"), h("p", {}, turn.user)));
  if (turn.answers.length) article.append(answerView(turn));
  turn.el = article;
  return article;
}

function renderTranscript() {
  replace($("#transcript"), state.turns.map(turnView));
}

// -- streaming -------------------------------------------------------------------------------------
function liveAnswer() {
  const text = h("p", { class: "streaming" });
  const sources = h("ol", {});
  const steps = h("ol", {});
  const el = h("div", { class: "msg assistant pending", "aria-busy": "true" },
    h("h3", { class: "visually-hidden" }, "Answer (being written)"),
    h("section", { class: "sources", hidden: true, "aria-label": "Sources" }, h("h4", {}, "Sources"), sources),
    h("details", { class: "steps", open: true, hidden: true }, h("summary", {}, "ReAct steps"), steps),
    text);
  return { el, text, sources, steps };
}

async function runStream(path, body, turn) {
  const live = liveAnswer();
  const existing = turn.el.querySelector(".msg.assistant");
  if (existing) existing.replaceWith(live.el); else turn.el.append(live.el);
  state.controller = new AbortController();
  setBusy(true);
  status("Answering…");
  let done = null;
  try {
    for await (const { event, data } of stream(path, body, { signal: state.controller.signal })) {
      if (event === "token") {
        live.text.append(data.text);
      } else if (event === "source") {
        live.sources.parentElement.hidden = false;
        live.sources.append(h("li", {}, `[${data.n}] ${data.title || data.doc_id || ""}`));
      } else if (event === "step") {
        live.steps.parentElement.hidden = false;
        live.steps.append(stepView(data));
      } else if (event === "done") {
        done = data;
      } else if (event === "error") {
        const e = data.error || {};
        throw new ApiError(e.status || 500, e.message || "the answer failed", { code: e.code });
      }
    }
    if (!done) throw new ApiError(502, "The answer stopped before it was finished. Try again.");
    turn.answers.push(done);
    turn.shown = turn.answers.length - 1;
    state.conversationId = done.conversation_id;
    live.el.replaceWith(answerView(turn));
    status("Answer ready.");
    loadHistory();
    return done;
  } catch (err) {
    if (turn.answers.length) live.el.replaceWith(answerView(turn));
    else live.el.replaceWith(h("div", { class: "msg assistant failed" }, h("p", { class: "muted" }, err.name === "AbortError" ? "Stopped." : "No answer.")));
    showError(err);
    status(plainMessage(err));
    return null;
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

function setBusy(busy) {
  $("#send").disabled = busy;
  $("#stop").hidden = !busy;
  $$("button.regen, .actions button").forEach((b) => { b.disabled = busy; });
  $("#transcript").setAttribute("aria-busy", String(busy));
}

async function send(ev) {
  ev?.preventDefault();
  const box = $("#message");
  const text = box.value.trim();
  if (!text || state.controller) return;
  hideError();
  box.value = "";
  const turn = { user: text, answers: [], shown: 0, el: null };
  state.turns.push(turn);
  $("#transcript").append(turnView(turn));
  turn.el.scrollIntoView({ block: "end" });
  const done = await runStream("/v1/chat", request(text), turn);
  if (!done && !turn.answers.length) box.value = text; // let the user retry without retyping
  box.focus();
}

async function regenerateAnswer(turn) {
  if (state.controller) return;
  hideError();
  const original = turn.answers[0];
  const p = params();
  await runStream(`/v1/chat/${encodeURIComponent(original.id)}/regenerate`, Object.keys(p).length ? { params: p } : {}, turn);
  turn.el.querySelector(".msg.assistant .answer-text")?.setAttribute("tabindex", "-1");
  turn.el.querySelector(".msg.assistant .answer-text")?.focus();
}

function stop() {
  if (state.controller) state.controller.abort();
}

// -- history ---------------------------------------------------------------------------------------
async function loadHistory() {
  const list = $("#history");
  let rows;
  try {
    rows = (await get("/v1/conversations?limit=50")).data;
  } catch (err) {
    showError(err);
    return;
  }
  replace(list, rows.length ? rows.map((c) => {
    const current = c.id === state.conversationId;
    return h("li", {},
      h("button", { type: "button", class: "link conv", "aria-current": current ? "true" : null,
        onclick: () => openConversation(c.id) },
        h("span", { class: "conv-title" }, c.title || "(untitled)"),
        h("span", { class: "muted small" }, `${c.mode}${c.index_name ? ` · ${c.index_name}` : ""} · ${fmtTime(c.updated_at)}`)),
      h("button", { type: "button", class: "icon", "aria-label": `Delete conversation: ${c.title || c.id}`,
        onclick: () => deleteConversation(c) }, "Delete"));
  }) : h("li", { class: "muted" }, "No conversations yet."));
}

async function openConversation(id) {
  if (state.controller) return;
  hideError();
  try {
    const conv = await get(`/v1/conversations/${encodeURIComponent(id)}`);
    state.conversationId = conv.id;
    state.turns = conv.turns.map((t) => ({ user: t.user?.content ?? "", answers: t.answers, shown: t.answers.length - 1, el: null }));
    renderTranscript();
    loadHistory();
    status(`Opened conversation: ${conv.title || conv.id}`);
    $("#message").focus();
  } catch (err) {
    showError(err);
  }
}

async function deleteConversation(conv) {
  const ok = await confirmDialog({ title: "Delete this conversation?", body: `“${conv.title || conv.id}” and all its answers will be deleted.`, confirmLabel: "Delete", danger: true });
  if (!ok) return;
  try {
    await del(`/v1/conversations/${encodeURIComponent(conv.id)}`);
    if (conv.id === state.conversationId) newConversation();
    await loadHistory();
    status("Conversation deleted.");
    ($("#history button.conv") || $("#new-chat")).focus();
  } catch (err) {
    showError(err);
  }
}

function newConversation() {
  if (state.controller) return;
  state.conversationId = null;
  state.turns = [];
  renderTranscript();
  hideError();
  loadHistory();
  $("#message").focus();
  status("New conversation.");
}

// -- keyboard -----------------------------------------------------------------------------------------
function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function keys(ev) {
  if (ev.key === "Escape" && state.controller) {
    ev.preventDefault();
    stop();
  } else if (ev.altKey && !ev.ctrlKey && !ev.metaKey && (ev.key === "n" || ev.key === "N" || ev.code === "KeyN")) {
    ev.preventDefault();
    newConversation();
  } else if (ev.altKey && ["Digit1", "Digit2", "Digit3"].includes(ev.code)) {
    ev.preventDefault();
    setMode({ Digit1: "plain", Digit2: "rag", Digit3: "react" }[ev.code]);
  } else if (!typing(ev.target) && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
    if (ev.key === "/") {
      ev.preventDefault();
      $("#message").focus();
    } else if (ev.key === "?") {
      ev.preventDefault();
      $("#shortcuts").showModal();
    }
  }
}

// -- start ----------------------------------------------------------------------------------------
async function main() {
  const who = await startPage(showError);
  if (!who) return;
  await loadIndexes(who);
  restoreSettings();
  describeMode();
  for (const form of [$("#controls"), $("#settings-form")]) {
    form.addEventListener("change", saveSettings);
    form.addEventListener("submit", (ev) => ev.preventDefault());
  }
  $("#composer").addEventListener("submit", send);
  $("#message").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    }
  });
  $("#stop").addEventListener("click", stop);
  $("#new-chat").addEventListener("click", newConversation);
  $("#shortcuts-open").addEventListener("click", () => $("#shortcuts").showModal());
  document.addEventListener("keydown", keys);
  await loadHistory();
  document.body.dataset.ready = "true";
  $("#message").focus();
}

main();
