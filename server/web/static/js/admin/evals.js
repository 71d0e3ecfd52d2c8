// Evaluation reports: the runs stored by `agentstack eval`, with their headline figures.

import { get } from "../api.js";
import { $, fmtNum, fmtTime, h, replace, table } from "../dom.js";
import { attempt } from "./ui.js";

export async function show() {
  const list = await attempt(() => get("/v1/admin/eval/reports"));
  if (!list) return;
  replace($("#evals-body"), table([
    { label: "Run", value: (r) => r.run_id },
    { label: "Suite", value: (r) => r.suite || "–" },
    { label: "System", value: (r) => [r.system?.kind, r.system?.model].filter(Boolean).join(" · ") || "–" },
    { label: "Examples", value: (r) => r.n, numeric: true },
    { label: "Errors", value: (r) => r.n_errors, numeric: true },
    { label: "Finished", value: (r) => fmtTime(r.finished_at) },
    { label: "Headline figures", value: (r) => h("ul", { class: "plain" },
      Object.entries(r.headline || {}).slice(0, 8).map(([k, v]) => h("li", {}, `${k}: ${fmtNum(v, 4)}`))) },
    { label: "Report", value: (r) => (r.has_html ? h("a", { href: `/v1/admin/eval/reports/${encodeURIComponent(r.run_id)}/html`,
      target: "_blank", rel: "noopener noreferrer" }, "Open") : "–") },
  ], list.data, { caption: "Stored evaluation runs, newest first", empty: "No evaluation report yet. Run one with `agentstack eval run SUITE`." }));
}
