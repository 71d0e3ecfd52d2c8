// The audit log: every operator action, newest first, paged.

import { get } from "../api.js";
import { $, fmtTime, h, replace, table } from "../dom.js";
import { attempt } from "./ui.js";

const PAGE = 50;
let offset = 0;

export function init() {
  $("#audit-refresh").addEventListener("click", () => { offset = 0; show(); });
  $("#audit-action").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { offset = 0; show(); }
  });
}

export async function show() {
  const action = $("#audit-action").value.trim();
  const query = `limit=${PAGE + 1}&offset=${offset}${action ? `&action=${encodeURIComponent(action)}` : ""}`;
  const list = await attempt(() => get(`/v1/admin/audit?${query}`));
  if (!list) return;
  const rows = list.data.slice(0, PAGE);
  const more = list.data.length > PAGE;
  replace($("#audit-body"), table([
    { label: "When", value: (r) => fmtTime(r.at) },
    { label: "Key", value: (r) => r.key_id },
    { label: "User", value: (r) => r.user_id || "–" },
    { label: "Action", value: (r) => r.action },
    { label: "Target", value: (r) => r.target || "–" },
    { label: "Outcome", value: (r) => r.outcome },
    { label: "Detail", value: (r) => (r.detail ? h("code", { class: "detail" }, JSON.stringify(r.detail)) : "–") },
  ], rows, { empty: "No entries." }),
  h("div", { class: "row" },
    h("button", { type: "button", class: "secondary small", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); show(); } }, "Newer"),
    h("button", { type: "button", class: "secondary small", disabled: !more, onclick: () => { offset += PAGE; show(); } }, "Older")));
}
