// Model versions: what is registered and served, their gate results side by side, and promote /
// rollback, each behind a confirmation dialog.

import { get, post } from "../api.js";
import { $, confirmDialog, fmtNum, fmtTime, h, replace, table } from "../dom.js";
import { attempt, badge, status } from "./ui.js";

const gateCache = new Map(); // job id -> full gate decision

export async function show() {
  const models = await attempt(() => get("/v1/admin/models"));
  if (!models) return;
  const versions = models.data;
  const gates = await gateDecisions(versions);
  replace($("#models-body"),
    h("p", {}, "Serving ", h("strong", {}, models.active), ` as “${models.alias}”. Base model: ${models.base}.`),
    h("div", { class: "row" }, h("button", { type: "button", class: "secondary", id: "rollback",
      onclick: () => rollback(models) }, "Roll back…")),
    table([
      { label: "Version", value: (v) => v.version },
      { label: "State", value: (v) => h("span", {}, v.active ? badge("active", "ok") : null, v.loaded ? badge("loaded") : null,
        v.is_base ? badge("base") : null) },
      { label: "Method", value: (v) => v.method || "–" },
      { label: "Parent", value: (v) => v.parent_version || "–" },
      { label: "Created", value: (v) => fmtTime(v.created_at) },
      { label: "Pairs", value: (v) => fmtNum(v.data?.pairs), numeric: true },
      { label: "Gate", value: (v) => (v.gate ? (v.gate.passed ? badge("passed", "ok") : badge("rejected", "bad")) : "–") },
      { label: "Action", value: (v) => (v.active ? "" : h("button", { type: "button", class: "small",
        "aria-label": `Promote ${v.version}`, onclick: () => promote(v) }, "Promote…")) },
    ], versions, { caption: "Versions" }),
    h("h2", {}, "Gate results side by side"),
    gateMatrix(versions, gates),
    h("h2", {}, "Deployments"),
    table([
      { label: "When", value: (d) => fmtTime(d.at) },
      { label: "Action", value: (d) => d.action || d.kind || "–" },
      { label: "Version", value: (d) => d.version || "–" },
      { label: "Previous", value: (d) => d.previous || "–" },
      { label: "By", value: (d) => d.key_id || d.by || "–" },
    ], [...(models.deployments || [])].reverse(), { empty: "No deployment yet." }));
}

async function gateDecisions(versions) {
  const out = new Map();
  await Promise.all(versions.filter((v) => v.job_id && v.gate).map(async (v) => {
    if (!gateCache.has(v.job_id)) {
      try {
        const job = await get(`/v1/admin/alignment/jobs/${encodeURIComponent(v.job_id)}?log_lines=0`);
        if (job.gate) gateCache.set(v.job_id, job.gate);
      } catch { /* fall back to the summary line */ }
    }
    out.set(v.version, gateCache.get(v.job_id) || { passed: v.gate.passed, checks: parseSummary(v.gate.summary) });
  }));
  return out;
}

/** "PASS kl=0.01:pass, win_rate=0.5:fail" -> [{name, value, status}] */
export function parseSummary(summary) {
  const body = String(summary || "").replace(/^(PASS|REJECT)\s*/, "");
  return body.split(/,\s*/).filter(Boolean).map((part) => {
    const m = part.match(/^([^=]+)=([^:]*):(\w+)$/);
    return m ? { name: m[1], value: m[2] === "-" ? null : Number(m[2]), status: m[3], threshold: null } : null;
  }).filter(Boolean);
}

function gateMatrix(versions, gates) {
  const gated = versions.filter((v) => gates.has(v.version));
  if (!gated.length) return h("p", { class: "muted" }, "No version has been through the gate yet.");
  const names = [...new Set(gated.flatMap((v) => gates.get(v.version).checks.map((c) => c.name)))];
  return h("table", { class: "matrix" },
    h("caption", {}, "Each column is a version; each cell the check's value and result (threshold in brackets)."),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Check"), gated.map((v) => h("th", { scope: "col" }, v.version)))),
    h("tbody", {},
      h("tr", {}, h("th", { scope: "row" }, "Decision"), gated.map((v) => h("td", {},
        gates.get(v.version).passed ? badge("passed", "ok") : badge("rejected", "bad")))),
      names.map((name) => h("tr", {}, h("th", { scope: "row" }, name), gated.map((v) => {
        const c = gates.get(v.version).checks.find((x) => x.name === name);
        if (!c) return h("td", { class: "muted" }, "–");
        return h("td", { class: `num check-${c.status}` }, `${fmtNum(c.value, 4)} ${c.status}`,
          c.threshold !== null && c.threshold !== undefined ? ` (${fmtNum(c.threshold, 4)})` : "");
      })))));
}

async function promote(version) {
  const rejected = version.gate && !version.gate.passed;
  const force = h("input", { type: "checkbox", id: "promote-force" });
  const ok = await confirmDialog({
    title: `Promote ${version.version}?`,
    body: h("div", {}, h("p", {}, "Every request to the served model will be answered by this version from now on (hot swap, no restart)."),
      rejected ? h("p", { class: "error-text" }, "The gate rejected this version.") : null),
    extra: rejected ? h("label", { class: "check" }, force, " Promote anyway (recorded in the audit log)") : null,
    confirmLabel: "Promote", danger: true,
  });
  if (!ok) return;
  const result = await attempt(() => post(`/v1/admin/models/${encodeURIComponent(version.version)}/promote`, { force: rejected && force.checked }));
  if (result) {
    status(`${version.version} is now active.`);
    await show();
  }
}

async function rollback(models) {
  const choices = models.data.filter((v) => !v.active && v.served_before);
  const select = h("select", { id: "rollback-version" },
    h("option", { value: "" }, "the previous version"),
    choices.map((v) => h("option", { value: v.version }, v.version)));
  const ok = await confirmDialog({
    title: "Roll back the served model?",
    body: `The served model returns to an earlier version (now: ${models.active}).`,
    extra: h("label", {}, "Return to ", select), confirmLabel: "Roll back", danger: true,
  });
  if (!ok) return;
  const result = await attempt(() => post("/v1/admin/models/rollback", select.value ? { version: select.value } : {}));
  if (result) {
    status(`Rolled back: ${result.active} is active.`);
    await show();
  }
}
