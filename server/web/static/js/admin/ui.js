// Shared helpers of the console's sections: the error box and the status line.

import { ApiError, plainMessage } from "../api.js";
import { $, clear, replace } from "../dom.js";

export function showError(err) {
  const box = $("#error");
  box.hidden = false;
  replace(box, err instanceof ApiError || err instanceof Error ? plainMessage(err) : String(err));
}

export function hideError() {
  $("#error").hidden = true;
  clear($("#error"));
}

export function status(text) {
  $("#status").textContent = text;
}

/** Run an action, reporting failure in the error box; returns its result or undefined. */
export async function attempt(fn) {
  try {
    hideError();
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

export function badge(text, kind) {
  const el = document.createElement("span");
  el.className = `badge ${kind || ""}`;
  el.textContent = text;
  return el;
}

export function statusBadge(value) {
  const kinds = { succeeded: "ok", running: "live", queued: "live", cancelling: "warn", cancelled: "warn", failed: "bad" };
  return badge(value, kinds[value]);
}
