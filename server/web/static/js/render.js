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

function claimTitle(claim) {
  if (!claim.supported) return `Not supported by the sources (support ${claim.support.toFixed(2)})`;
  const where = claim.source ? ` by source [${claim.source}]` : "";
  return `Supported${where} (support ${claim.support.toFixed(2)})`;
}

// A paragraph whose characters [offset, offset + para.length) may hold checked sentences: each
// sentence becomes a span that says whether the sources support it.
function claimSpans(para, offset, claims, sourceCount, prefix) {
  const out = [];
  let at = 0;
  for (const c of claims) {
    const start = c.start - offset;
    const end = c.end - offset;
    if (end <= 0 || start >= para.length || start < at) continue;
    if (start > at) out.push(...inline(para.slice(at, start), sourceCount, prefix));
    out.push(h("span", { class: `claim ${c.supported ? "supported" : "unsupported"}`, title: claimTitle(c) },
      inline(para.slice(start, Math.min(end, para.length)), sourceCount, prefix),
      c.supported ? null : h("span", { class: "visually-hidden" }, " (not supported by the sources)")));
    at = Math.min(end, para.length);
  }
  if (at < para.length) out.push(...inline(para.slice(at), sourceCount, prefix));
  return out;
}

/** The answer as a fragment: paragraphs of text with links, and code blocks. ``claims`` (the
 * grounding field's, with offsets into ``text``) mark which sentences the sources support. */
export function renderAnswer(text, sourceCount = 0, prefix = "a", claims = []) {
  const frag = document.createDocumentFragment();
  const full = String(text || "");
  const shown = (claims || []).filter((c) => c.kept && typeof c.start === "number")
    .sort((a, b) => a.start - b.start);
  const fence = /```[^\n]*\n?/g;
  let offset = 0;
  let i = 0;
  for (const part of full.split(fence)) {
    const at = full.indexOf(part, offset);
    offset = at + part.length;
    if (i++ % 2 === 1) {
      frag.append(h("pre", {}, h("code", {}, part.replace(/\n$/, ""))));
      continue;
    }
    let pos = at;
    for (const para of part.split(/\n{2,}/)) {
      const start = full.indexOf(para, pos);
      pos = start + para.length;
      if (para.trim()) frag.append(h("p", {}, claimSpans(para, start, shown, sourceCount, prefix)));
    }
  }
  return frag;
}
