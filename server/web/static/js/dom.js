// Building the DOM without HTML strings: every text goes in as a text node, so answers,
// documents and log lines (untrusted) can never become markup: no string is ever parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "href" && !safeHref(value)) {
      continue;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  return node;
}

/** Only same-page anchors, paths on this server, and http(s) URLs become links. */
export function safeHref(value) {
  const href = String(value);
  if (href.startsWith("#")) return true;
  if (href.startsWith("/") && !href.startsWith("//")) return true;
  return /^https?:\/\/[^\s]+$/i.test(href);
}

/** h("p", {class: "x"}, "text", child, [more]) */
export function h(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

export function s(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function replace(node, ...children) {
  return append(clear(node), children);
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

export function fmtTime(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "–";
  const date = typeof seconds === "number" ? new Date(seconds * 1000) : new Date(seconds);
  if (Number.isNaN(date.getTime())) return String(seconds);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function fmtNum(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return value.toPrecision(digits);
}

/** A table from column specs [{label, value: row => text|Node, numeric}] and rows. */
export function table(columns, rows, { caption, empty = "Nothing yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.numeric ? "num" : null }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {},
      columns.map((c, i) => {
        const cell = c.value(row);
        return i === 0 && c.header !== false
          ? h("th", { scope: "row", class: c.numeric ? "num" : null }, cell)
          : h("td", { class: c.numeric ? "num" : null }, cell);
      })))));
}

/** A <dl> of key/value pairs; nested objects are shown as JSON text. */
export function facts(obj) {
  const dl = h("dl", { class: "facts" });
  for (const [key, value] of Object.entries(obj || {})) {
    const shown = value !== null && typeof value === "object" ? JSON.stringify(value) : fmtNum(value);
    dl.append(h("dt", {}, key), h("dd", {}, shown));
  }
  return dl;
}

/**
 * Ask for confirmation in a modal <dialog> (focus trapped, Escape cancels). Resolves true on
 * confirm. `body` is a Node or text; `extra` optional form controls read by the caller.
 */
export function confirmDialog({ title, body, confirmLabel = "Confirm", danger = false, extra = null }) {
  return new Promise((resolve) => {
    const cancel = h("button", { type: "button", class: "secondary", value: "cancel" }, "Cancel");
    const ok = h("button", { type: "submit", class: danger ? "danger" : null, value: "ok" }, confirmLabel);
    const titleId = `dlg-${Math.random().toString(36).slice(2)}`;
    const form = h("form", { method: "dialog" },
      h("h2", { id: titleId }, title), typeof body === "string" ? h("p", {}, body) : body, extra,
      h("div", { class: "row end" }, cancel, ok));
    const dialog = h("dialog", { "aria-labelledby": titleId }, form);
    let answered = false;
    const done = (value) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    cancel.addEventListener("click", () => done(false));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); done(true); });
    dialog.addEventListener("cancel", () => done(false));
    dialog.addEventListener("close", () => done(false));
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
