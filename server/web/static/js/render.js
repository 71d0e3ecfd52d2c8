// Turning an answer (untrusted model output) into DOM nodes: text nodes only, plus two kinds of
// links: citations "[n]" pointing at the answer's own source list, and Markdown links / bare URLs
// that the server's output guard left in place (it removes hosts off its allowlist), kept only
// when they are http(s). Fenced code blocks become <pre><code>.

import { h, safeHref } from "./dom.js";

const INLINE = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\](?!\()|\[([^\]\n]{1,500})\]\(\s*<?([^)\s>]{1,2000})>?\s*\)|(https?:\/\/[^\s<>()[\]"']+)/g;

export function sourceAnchor(prefix, n) {
  return `${prefix}-src-${n}`;
}

function inline(text, sourceCount, prefix) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1] !== undefined) {
      const numbers = m[1].split(",").map((x) => Number(x.trim()));
      if (numbers.every((n) => n >= 1 && n <= sourceCount)) {
        out.push("[");
        numbers.forEach((n, i) => {
          if (i) out.push(", ");
          out.push(h("a", { href: `#${sourceAnchor(prefix, n)}`, class: "cite", "aria-label": `source ${n}` }, String(n)));
        });
        out.push("]");
      } else {
        out.push(m[0]);
      }
    } else if (m[2] !== undefined) {
      out.push(/^https?:/i.test(m[3]) && safeHref(m[3])
        ? h("a", { href: m[3], rel: "noopener noreferrer nofollow", target: "_blank" }, m[2])
        : m[2]);
    } else {
      out.push(safeHref(m[4]) ? h("a", { href: m[4], rel: "noopener noreferrer nofollow", target: "_blank" }, m[4]) : m[4]);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** The answer as a fragment: paragraphs of text with links, and code blocks. */
export function renderAnswer(text, sourceCount = 0, prefix = "a") {
  const frag = document.createDocumentFragment();
  const parts = String(text || "").split(/```[^\n]*\n?/);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      frag.append(h("pre", {}, h("code", {}, part.replace(/\n$/, ""))));
      return;
    }
    for (const para of part.split(/\n{2,}/)) {
      if (para.trim()) frag.append(h("p", {}, inline(para, sourceCount, prefix)));
    }
  });
  return frag;
}
