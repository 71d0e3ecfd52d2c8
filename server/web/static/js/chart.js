// Small inline SVG line charts (no library, works offline). Each chart has a title and a text
// summary for screen readers; the numbers are also shown in the tables beside it.

import { s, h } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function ticks(min, max, count = 4) {
  if (min === max) return [min];
  const step = (max - min) / count;
  return Array.from({ length: count + 1 }, (_, i) => min + i * step);
}

function fmt(v) {
  if (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0)) return v.toExponential(1);
  return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 1 ? 3 : 2);
}

/**
 * lineChart({title, series: [{name, points: [[x, y], ...]}], xLabels?: {x: label}, yMin?, yMax?})
 * x values are numbers (steps or bucket indexes); missing y values (null) break the line.
 */
export function lineChart({ title, series, xLabels = null, yMin = null, yMax = null, width = 520, height = 220 }) {
  const pad = { left: 52, right: 12, top: 12, bottom: 34 };
  const all = series.flatMap((sr) => sr.points.filter((p) => p[1] !== null && Number.isFinite(p[1])));
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, title));
  if (!all.length) {
    figure.append(h("p", { class: "muted" }, "No data yet."));
    return figure;
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [yMin ?? Math.min(...ys), yMax ?? Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const iw = width - pad.left - pad.right;
  const ih = height - pad.top - pad.bottom;
  const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * iw;
  const Y = (y) => pad.top + ih - ((y - y0) / (y1 - y0)) * ih;
  const summary = series.map((sr) => {
    const last = sr.points.filter((p) => p[1] !== null).at(-1);
    return last ? `${sr.name}: latest ${fmt(last[1])}` : `${sr.name}: no data`;
  }).join("; ");
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title}. ${summary}` });
  svg.append(s("title", {}, title));
  for (const t of ticks(y0, y1)) {
    svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: Y(t), y2: Y(t), class: "gridline" }));
    svg.append(s("text", { x: pad.left - 6, y: Y(t) + 4, "text-anchor": "end", class: "tick" }, fmt(t)));
  }
  const xt = xLabels ? [...new Set(xs)].sort((a, b) => a - b) : ticks(x0, x1).map((v) => Math.round(v));
  const every = Math.max(1, Math.ceil(xt.length / 6));
  xt.forEach((t, i) => {
    if (i % every) return;
    const label = xLabels ? (xLabels[t] ?? "") : fmt(t);
    svg.append(s("text", { x: X(t), y: height - pad.bottom + 16, "text-anchor": "middle", class: "tick" }, label));
  });
  svg.append(s("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: pad.top + ih, class: "axis" }));
  svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: pad.top + ih, y2: pad.top + ih, class: "axis" }));
  series.forEach((sr, i) => {
    const color = COLORS[i % COLORS.length];
    let run = [];
    const flush = () => {
      if (run.length > 1) svg.append(s("polyline", { points: run.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      run = [];
    };
    for (const [x, y] of sr.points) {
      if (y === null || !Number.isFinite(y)) { flush(); continue; }
      run.push(`${X(x).toFixed(1)},${Y(y).toFixed(1)}`);
      svg.append(s("circle", { cx: X(x), cy: Y(y), r: 3, fill: color }, s("title", {}, `${sr.name}: ${fmt(y)}`)));
    }
    flush();
  });
  figure.append(svg);
  if (series.length > 1 || series[0].name) {
    figure.append(h("ul", { class: "legend" }, series.map((sr, i) =>
      h("li", {}, s("svg", { width: 12, height: 12, "aria-hidden": "true" },
        s("rect", { width: 12, height: 12, fill: COLORS[i % COLORS.length] })), " ", sr.name))));
  }
  return figure;
}
