// Alignment jobs: start one (method and parameters), watch its status and metrics live (loss,
// reward margin and KL plotted), read its gate decision and log, cancel it.

import { get, post } from "../api.js";
import { lineChart } from "../chart.js";
import { $, clear, facts, fmtNum, fmtTime, h, replace, table } from "../dom.js";
import { attempt, showError, status, statusBadge } from "./ui.js";

const ACTIVE = new Set(["queued", "running", "cancelling"]);
let selected = null;
let timer = null;
let visible = false;

export function init() {
  $("#job-form").addEventListener("submit", start);
  $("#jobs-refresh").addEventListener("click", refresh);
}

export async function show() {
  visible = true;
  await refresh();
}

export function hide() {
  visible = false;
  stopPolling();
}

function stopPolling() {
  if (timer) clearTimeout(timer);
  timer = null;
}

function schedule(job) {
  stopPolling();
  if (visible && job && ACTIVE.has(job.status)) timer = setTimeout(refresh, 1500);
}

async function refresh() {
  const list = await attempt(() => get("/v1/admin/alignment/jobs?limit=20"));
  if (list) renderList(list.data);
  if (!selected && list && list.data.length) selected = list.data[0].id;
  let job = null;
  if (selected) job = await attempt(() => get(`/v1/admin/alignment/jobs/${encodeURIComponent(selected)}?log_lines=40`));
  if (job) renderDetail(job);
  schedule(job);
}

function renderList(jobs) {
  replace($("#jobs-list"), table([
    { label: "Job", value: (j) => h("button", { type: "button", class: "link", "aria-current": j.id === selected ? "true" : null,
      onclick: () => { selected = j.id; refresh(); } }, j.id) },
    { label: "Method", value: (j) => j.method },
    { label: "Status", value: (j) => statusBadge(j.status) },
    { label: "Stage", value: (j) => j.stage || "–" },
    { label: "Started", value: (j) => fmtTime(j.created_at) },
    { label: "Version", value: (j) => j.version || "–" },
    { label: "Gate", value: (j) => (j.gate ? (j.gate.passed ? "passed" : "rejected") : "–") },
  ], jobs, { caption: "Recent jobs", empty: "No alignment job has run yet." }));
}

function metricSeries(metrics, keys) {
  const series = [];
  for (const [run, data] of Object.entries(metrics || {})) {
    if (run === "latest" || !data || !Array.isArray(data.history)) continue;
    const key = keys.find((k) => data.history.some((row) => typeof row[k] === "number"));
    if (!key) continue;
    series.push({ name: `${run} (${key})`, points: data.history.filter((row) => typeof row[key] === "number")
      .map((row, i) => [typeof row.step === "number" ? row.step : i + 1, row[key]]) });
  }
  return series;
}

function gateView(gate) {
  if (!gate) return h("p", { class: "muted" }, "No gate decision yet.");
  return h("div", {},
    h("p", {}, gate.passed ? "The gate passed the candidate." : "The gate rejected the candidate.", " ",
      h("span", { class: "muted" }, gate.summary || "")),
    Array.isArray(gate.checks) ? table([
      { label: "Check", value: (c) => c.name },
      { label: "Result", value: (c) => c.status },
      { label: "Value", value: (c) => fmtNum(c.value, 4), numeric: true },
      { label: "Threshold", value: (c) => fmtNum(c.threshold, 4), numeric: true },
    ], gate.checks, { caption: "Gate checks" }) : null);
}

function renderDetail(job) {
  const cancel = ACTIVE.has(job.status) && job.status !== "cancelling"
    ? h("button", { type: "button", class: "danger", id: "job-cancel", onclick: () => cancel_(job) }, "Cancel job") : null;
  const m = job.metrics || {};
  replace($("#job-detail"),
    h("h2", {}, `Job ${job.id}`),
    h("div", { class: "row" }, h("span", { id: "job-status" }, "Status: ", statusBadge(job.status)),
      h("span", {}, `Stage: ${job.stage || "–"}`), cancel),
    job.error ? h("p", { class: "error-text" }, job.error) : null,
    facts({ method: job.method, created_by: job.created_by, started: fmtTime(job.started_at),
      finished: fmtTime(job.finished_at), from_version: job.current_version, new_version: job.version,
      promotion: job.promotion }),
    job.data ? h("details", {}, h("summary", {}, "Data"), facts(job.data)) : null,
    h("div", { class: "charts" },
      lineChart({ title: "Loss", series: metricSeries(m, ["loss"]) }),
      lineChart({ title: "Reward margin", series: metricSeries(m, ["rewards/margins", "margin", "reward"]) }),
      lineChart({ title: "KL", series: metricSeries(m, ["kl"]) })),
    h("h3", {}, "Gate"), gateView(job.gate),
    h("details", {}, h("summary", {}, "Spec"), h("pre", {}, JSON.stringify(job.spec, null, 2))),
    h("details", { open: ACTIVE.has(job.status) }, h("summary", {}, "Log (last lines)"),
      h("pre", { class: "log" }, (job.log_tail || []).join("\n") || "(empty)")));
}

async function cancel_(job) {
  const done = await attempt(() => post(`/v1/admin/alignment/jobs/${encodeURIComponent(job.id)}/cancel`));
  if (done) {
    status(`Job ${job.id}: ${done.status}`);
    await refresh();
  }
}

// -- the form ----------------------------------------------------------------------------------------
function num(form, name) {
  const value = form.elements[name].value.trim();
  return value === "" ? undefined : Number(value);
}

function merge(base, extra) {
  for (const [k, v] of Object.entries(extra)) {
    if (v && typeof v === "object" && !Array.isArray(v) && base[k] && typeof base[k] === "object") merge(base[k], v);
    else base[k] = v;
  }
  return base;
}

function prune(obj) {
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || Number.isNaN(v)) delete obj[k];
    else if (v && typeof v === "object" && !Array.isArray(v)) {
      prune(v);
      if (!Object.keys(v).length) delete obj[k];
    }
  }
  return obj;
}

export function specFrom(form) {
  const promote = form.elements.promote.value;
  const spec = prune({
    method: form.elements.method.value,
    data_window: { days: num(form, "days") },
    data: form.elements.revisions.checked ? { revisions: true } : undefined,
    hyperparameters: {
      max_steps: num(form, "max_steps"), learning_rate: num(form, "learning_rate"), beta: num(form, "beta"),
      batch_size: num(form, "batch_size"), lora_r: num(form, "lora_r"), max_length: num(form, "max_length"),
    },
    thresholds: { min_pairs: num(form, "min_pairs"), heldout_fraction: num(form, "heldout_fraction") },
    gate: { max_kl: num(form, "max_kl"), min_win_rate: num(form, "min_win_rate") },
    promote: promote === "" ? undefined : promote === "true",
    note: form.elements.note.value.trim() || undefined,
  });
  if (spec.hyperparameters?.lora_r) spec.hyperparameters.lora_alpha = 2 * spec.hyperparameters.lora_r;
  const extra = form.elements.extra.value.trim();
  if (extra) merge(spec, JSON.parse(extra));
  return spec;
}

async function start(ev) {
  ev.preventDefault();
  let spec;
  try {
    spec = specFrom(ev.target);
  } catch (err) {
    showError(new Error(`The extra spec is not valid JSON: ${err.message}`));
    return;
  }
  const button = $("#job-start");
  button.disabled = true;
  try {
    const job = await attempt(() => post("/v1/admin/alignment/jobs", spec));
    if (job) {
      selected = job.id;
      status(`Started job ${job.id}.`);
      clear($("#job-detail"));
      await refresh();
      $("#job-status")?.setAttribute("tabindex", "-1");
      $("#job-status")?.focus();
    }
  } finally {
    button.disabled = false;
  }
}
