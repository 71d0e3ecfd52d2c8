// Feedback: counts and up-ratio per model version, overall and per period, plotted.

import { get } from "../api.js";
import { lineChart } from "../chart.js";
import { $, fmtNum, fmtTime, h, replace, table } from "../dom.js";
import { attempt } from "./ui.js";

export function init() {
  $("#fb-refresh").addEventListener("click", show);
  $("#fb-bucket").addEventListener("change", show);
}

export async function show() {
  const days = Number($("#fb-days").value) || 30;
  const since = Math.floor(Date.now() / 1000 - days * 86400);
  const stats = await attempt(() => get(`/v1/feedback/stats?bucket=${encodeURIComponent($("#fb-bucket").value)}&since=${since}`));
  if (!stats) return;
  const periods = [...new Set(stats.series.map((r) => r.period))].sort();
  const xLabels = Object.fromEntries(periods.map((p, i) => [i, p]));
  const versions = [...new Set(stats.series.map((r) => r.model_version))];
  const points = (field) => versions.map((v) => ({
    name: v,
    points: periods.map((p, i) => {
      const row = stats.series.find((r) => r.period === p && r.model_version === v);
      return [i, row ? row[field] : null];
    }),
  }));
  const total = stats.total;
  replace($("#fb-body"),
    h("p", {}, `${total.total} votes in the last ${days} days: ${total.up} up, ${total.down} down`,
      total.up_ratio === null ? "." : ` (up ratio ${fmtNum(total.up_ratio)}).`),
    table([
      { label: "Model version", value: (r) => r.model_version },
      { label: "Up", value: (r) => r.up, numeric: true },
      { label: "Down", value: (r) => r.down, numeric: true },
      { label: "Total", value: (r) => r.total, numeric: true },
      { label: "Up ratio", value: (r) => fmtNum(r.up_ratio), numeric: true },
      { label: "Corrections", value: (r) => r.corrections, numeric: true },
      { label: "First vote", value: (r) => fmtTime(r.first_at) },
      { label: "Last vote", value: (r) => fmtTime(r.last_at) },
    ], stats.versions, { caption: "Votes per model version", empty: "No votes in this window." }),
    h("div", { class: "charts" },
      lineChart({ title: `Up ratio per ${stats.bucket}`, series: points("up_ratio"), xLabels, yMin: 0, yMax: 1 }),
      lineChart({ title: `Votes per ${stats.bucket}`, series: points("total"), xLabels, yMin: 0 })));
}
