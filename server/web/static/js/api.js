// The JSON API as the pages use it: the session cookie authenticates (credentials: same-origin),
// state-changing requests carry the CSRF token from GET /v1/session, errors become ApiError with
// a plain message, and POST /v1/chat streams arrive as typed SSE events.

let csrfToken = null;
let current = null;

export class ApiError extends Error {
  constructor(status, message, { code = null, retryAfter = null, requestId = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }
}

/** What to tell a person about an error, in plain words. */
export function plainMessage(err) {
  if (!(err instanceof ApiError)) {
    if (err && err.name === "AbortError") return "Stopped.";
    return "Cannot reach the server. Check your connection and try again.";
  }
  const wait = err.retryAfter ? ` (in about ${Math.ceil(err.retryAfter)} s)` : "";
  if (err.status === 429) {
    return err.code === "rate_limited"
      ? `Too many requests for this key: slow down and try again${wait}.`
      : `The model is busy, try again${wait}.`;
  }
  if (err.status === 401) return "Your session has ended. Sign in again.";
  if (err.code === "csrf_failed") return "This page is out of date. Reload it and try again.";
  if (err.status === 403) return `Not allowed: ${withFix(err.message)}`;
  if (err.status === 503) return `The service is not available right now: ${withFix(err.message)}`;
  if (err.status >= 500) return `Something went wrong on the server${err.requestId ? ` (request ${err.requestId})` : ""}. Try again.`;
  return withFix(err.message) || `Request failed (${err.status}).`;
}

function withFix(message) {
  // The server appends "(fix: what to do)"; keep the advice, in a sentence of its own.
  const text = String(message || "");
  const at = text.lastIndexOf(" (fix: ");
  if (at < 0 || !text.endsWith(")")) return text;
  return `${text.slice(0, at)}. To fix: ${text.slice(at + 7, -1)}.`;
}

async function errorFrom(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const e = (body && body.error) || {};
  const retry = response.headers.get("Retry-After");
  return new ApiError(response.status, e.message || response.statusText, {
    code: e.code || null,
    retryAfter: retry ? Number(retry) : null,
    requestId: (body && body.request_id) || response.headers.get("X-Request-ID"),
  });
}

function headers(method, json) {
  const out = { Accept: "application/json" };
  if (json) out["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) out["X-CSRF-Token"] = csrfToken;
  return out;
}

/** Who is signed in ({key_id, role, user_id, indexes, local, csrf_token}); null when nobody. */
export async function loadSession() {
  const response = await fetch("/v1/session", { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) return null;
  if (!response.ok) throw await errorFrom(response);
  current = await response.json();
  csrfToken = current.csrf_token;
  return current;
}

export const session = () => current;

export async function api(method, path, body, { signal } = {}) {
  const json = body !== undefined;
  const response = await fetch(path, {
    method, credentials: "same-origin", headers: headers(method, json), signal,
    body: json ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) {
    const err = await errorFrom(response);
    if (response.status === 401 && current && !current.local) window.dispatchEvent(new CustomEvent("session-ended"));
    throw err;
  }
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body === undefined ? {} : body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

/**
 * POST a streaming request and yield its typed SSE events as {event, data}. An HTTP error before
 * the stream starts throws ApiError; an `error` event is yielded like any other.
 */
export async function* stream(path, body, { signal } = {}) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin", headers: { ...headers("POST", true), Accept: "text/event-stream" },
    body: JSON.stringify({ ...body, stream: true }), signal,
  });
  if (!response.ok) {
    const err = await errorFrom(response);
    if (response.status === 401) window.dispatchEvent(new CustomEvent("session-ended"));
    throw err;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const parsed = parseEvent(block);
      if (parsed) yield parsed;
    }
  }
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return null;
  try {
    return { event, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

export async function signOut() {
  try {
    if (!csrfToken) await loadSession();
    await api("DELETE", "/v1/session");
  } catch {
    // the cookie may already be invalid: the sign-in page is the right place either way
  } finally {
    csrfToken = null;
    current = null;
    window.location.assign("/login");
  }
}

/**
 * Page start shared by the signed-in pages: load the session, send a visitor with none to the
 * sign-in page (coming back to this page afterwards), wire the header. Resolves to the session, or
 * to null when the page must not go on (redirected, or the error was shown with showError).
 */
export async function startPage(showError) {
  let who;
  try {
    who = await loadSession();
  } catch (err) {
    showError(err);
    return null;
  }
  if (!who) {
    window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
    return null;
  }
  wireHeader(who);
  return who;
}

/** Header chrome shared by the pages: who is signed in, the nav and the sign-out button. */
export function wireHeader(who) {
  const label = document.getElementById("who");
  if (label) {
    label.textContent = who.local ? "Local mode (no keys configured): operator"
      : `Signed in with key ${who.key_id} (${who.role})${who.user_id && who.user_id !== "-" ? ` as ${who.user_id}` : ""}`;
  }
  const consoleLink = document.getElementById("nav-console");
  if (consoleLink) consoleLink.hidden = who.role !== "operator";
  const out = document.getElementById("sign-out");
  if (out) {
    out.hidden = !!who.local;
    out.addEventListener("click", () => signOut());
  }
  window.addEventListener("session-ended", () => {
    window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
  });
}
