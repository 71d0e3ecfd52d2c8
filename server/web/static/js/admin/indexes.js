// Indexes: stats, the document list (paged), upload and delete.

import { del, get, post } from "../api.js";
import { $, clear, confirmDialog, facts, fmtNum, fmtTime, h, replace, table } from "../dom.js";
import { attempt, status } from "./ui.js";

const PAGE = 25;
const TEXT_EXT = /\.(md|markdown|txt|text|rst|html?|json|jsonl|csv|tsv|ya?ml|xml)$/i;
let offset = 0;

export function init() {
  $("#ix-select").addEventListener("change", () => { offset = 0; render(); });
}

export async function show() {
  const list = await attempt(() => get("/v1/indexes"));
  if (!list) return;
  const select = $("#ix-select");
  const keep = select.value;
  clear(select);
  for (const ix of list.data) select.append(h("option", { value: ix.name }, ix.error ? `${ix.name} (unreadable)` : ix.name));
  if (list.data.some((ix) => ix.name === keep)) select.value = keep;
  if (!list.data.length) {
    replace($("#ix-body"), h("p", { class: "muted" }, "No index yet. Create one with `agentstack index create NAME PATH`."));
    return;
  }
  await render();
}

async function render() {
  const name = $("#ix-select").value;
  if (!name) return;
  const path = `/v1/indexes/${encodeURIComponent(name)}`;
  const [stats, docs] = await Promise.all([
    attempt(() => get(`${path}/stats`)),
    attempt(() => get(`${path}/documents?offset=${offset}&limit=${PAGE}`)),
  ]);
  const upload = uploadForm(name);
  const body = [h("h2", {}, `Index “${name}”`)];
  if (stats) {
    body.push(facts({ documents: stats.documents, chunks: stats.chunks, tokens: stats.tokens, generation: stats.generation,
      embedder: stats.embedder?.id, vectors: stats.vectors?.kind, pii_policy: stats.pii_policy,
      disk_bytes: stats.disk_bytes, updated: fmtTime(stats.updated_at), last_ingest: stats.last_ingest }));
  }
  body.push(h("h3", {}, "Upload documents"), upload);
  if (docs) {
    body.push(h("h3", {}, `Documents (${docs.total})`), table([
      { label: "Document", value: (d) => d.title || d.doc_id },
      { label: "Source", value: (d) => d.source },
      { label: "Format", value: (d) => d.format },
      { label: "Chunks", value: (d) => d.n_chunks, numeric: true },
      { label: "Characters", value: (d) => fmtNum(d.chars), numeric: true },
      { label: "Ingested", value: (d) => fmtTime(d.ingested_at) },
      { label: "Action", value: (d) => h("button", { type: "button", class: "small danger", "aria-label": `Delete ${d.title || d.doc_id}`,
        onclick: () => remove(name, d) }, "Delete…") },
    ], docs.data, { empty: "This index has no documents." }), pager(docs));
  }
  replace($("#ix-body"), body);
}

function pager(docs) {
  if (docs.total <= PAGE) return null;
  return h("div", { class: "row" },
    h("button", { type: "button", class: "secondary small", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); render(); } }, "Previous page"),
    h("span", {}, `${offset + 1}–${Math.min(offset + PAGE, docs.total)} of ${docs.total}`),
    h("button", { type: "button", class: "secondary small", disabled: offset + PAGE >= docs.total, onclick: () => { offset += PAGE; render(); } }, "Next page"));
}

function uploadForm(name) {
  const input = h("input", { type: "file", id: "ix-files", multiple: true });
  const result = h("div", { role: "status" });
  const button = h("button", { type: "submit" }, "Upload");
  const form = h("form", { class: "row" }, h("label", { for: "ix-files" }, "Files"), input, button, result);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!input.files.length) { result.textContent = "Choose one or more files first."; return; }
    button.disabled = true;
    try {
      const documents = await Promise.all([...input.files].map(readFile));
      const report = await attempt(() => post(`/v1/indexes/${encodeURIComponent(name)}/documents`, { documents }));
      if (report) {
        const failed = (report.failed || []).length;
        status(`Uploaded: ${report.added.length} added, ${report.updated.length} updated, ${report.unchanged.length} unchanged${failed ? `, ${failed} failed` : ""}.`);
        await render();
        const after = $("#ix-body [role=status]");
        if (after) after.textContent = $("#status").textContent;
      }
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onerror = () => reject(reader.error);
    if (TEXT_EXT.test(file.name)) {
      reader.onload = () => resolve({ name: file.name, text: reader.result });
      reader.readAsText(file);
    } else {
      reader.onload = () => resolve({ name: file.name, content_base64: String(reader.result).split(",", 2)[1] || "" });
      reader.readAsDataURL(file);
    }
  });
}

async function remove(name, doc) {
  const ok = await confirmDialog({ title: `Delete “${doc.title || doc.doc_id}”?`,
    body: `The document and its vectors leave index “${name}” in a new version.`, confirmLabel: "Delete", danger: true });
  if (!ok) return;
  const report = await attempt(() => del(`/v1/indexes/${encodeURIComponent(name)}/documents/${encodeURIComponent(doc.doc_id)}`));
  if (report) {
    status(`Deleted ${doc.title || doc.doc_id}.`);
    await render();
  }
}
