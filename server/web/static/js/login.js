// Sign-in: POST /v1/session with the key; the server answers with an HttpOnly cookie. Then go
// where the user was headed (only this server's own pages).

import { ApiError, loadSession, plainMessage } from "./api.js";

const PAGES = new Set(["/", "/admin"]);

function target() {
  const next = new URLSearchParams(window.location.search).get("next");
  return PAGES.has(next) ? next : "/";
}

function show(text) {
  const box = document.getElementById("login-error");
  box.textContent = text;
  box.hidden = !text;
}

async function signIn(ev) {
  ev.preventDefault();
  const key = document.getElementById("key").value.trim();
  const user = document.getElementById("user-id").value.trim();
  if (!key) return show("Enter your API key.");
  const button = document.getElementById("sign-in");
  button.disabled = true;
  show("");
  try {
    const response = await fetch("/v1/session", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ key, user_id: user || null }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      const e = body.error || {};
      if (response.status === 401) throw new ApiError(400, "That key was not accepted. Check it and try again.");
      throw new ApiError(response.status, e.message || response.statusText, { code: e.code });
    }
    const who = await response.json();
    document.getElementById("key").value = "";
    const next = target();
    window.location.assign(next === "/admin" && who.role !== "operator" ? "/" : next);
  } catch (err) {
    show(plainMessage(err));
    document.getElementById("key").focus();
  } finally {
    button.disabled = false;
  }
}

async function main() {
  document.getElementById("login-form").addEventListener("submit", signIn);
  try {
    const who = await loadSession();
    if (who && who.local) {
      window.location.replace(target());
      return;
    }
  } catch { /* show the form */ }
  document.body.dataset.ready = "true";
  document.getElementById("key").focus();
}

main();
