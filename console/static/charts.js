// roomfeed console charts: small hand-written SVG charts (time series, bars, confidence intervals).
// No library and no inline styles (the page's CSP forbids them); colours are SVG attributes.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#e4405f", "#2f7ed8", "#2ca02c", "#ff9f1c", "#8e44ad", "#17becf", "#7f7f7f", "#bcbd22"];

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, content, attrs) {
    const el = svg("text", Object.assign({ x, y, class: "chart-text" }, attrs || {}), parent);
    el.textContent = content;
    return el;
  }

  // "Nice" axis ticks (1, 2, 5 × 10^k) covering [lo, hi].
  function ticks(lo, hi, count) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return v.toFixed(2).replace(/\.?0+$/, "");
    if (a === 0) return "0";
    return v.toPrecision(2);
  }

  function clock(t, withSeconds) {
    const d = new Date(t * 1000);
    const two = (n) => String(n).padStart(2, "0");
    return two(d.getHours()) + ":" + two(d.getMinutes()) + (withSeconds ? ":" + two(d.getSeconds()) : "");
  }

  // Draw at the host's real width so text keeps its size on wide and narrow cards.
  function widthOf(host, fallback) {
    return Math.max(320, Math.round(host.clientWidth || fallback));
  }

  function frame(host, width, height, title) {
    host.replaceChildren();
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" }, host);
    if (title) { svg("title", {}, root).textContent = title; }
    return root;
  }

  // One row of swatches, each as wide as its label; returns the y below the legend (rows wrap).
  function legend(root, series, x, y, width) {
    let lx = x, ly = y;
    series.forEach((s, i) => {
      const label = s.label.length > 28 ? s.label.slice(0, 27) + "…" : s.label;
      const w = 26 + label.length * 7;
      if (lx + w > x + width && lx > x) { lx = x; ly += 16; }
      svg("rect", { x: lx, y: ly - 9, width: 10, height: 10, fill: s.color || PALETTE[i % PALETTE.length] }, root);
      text(root, lx + 14, ly, label, { class: "chart-legend" });
      lx += w;
    });
    return ly;
  }

  // series: [{label, color?, points: [[t, v], ...]}]; time on x (epoch seconds).
  function timeSeries(host, series, opts) {
    const o = Object.assign({ width: widthOf(host, 640), height: 220, yFormat: fmt, title: "" }, opts || {});
    const root = frame(host, o.width, o.height, o.title);
    const m = { l: 52, r: 34, t: 26, b: 24 };
    const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
    m.t += legend(root, series, m.l, 14, o.width - m.l - m.r) - 14;
    if (pts.length === 0) {
      text(root, o.width / 2, o.height / 2, "no samples yet", { "text-anchor": "middle", class: "chart-empty" });
      return root;
    }
    let t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
    if (t1 - t0 < 60) { t0 = t1 - 60; }
    let y0 = Math.min(0, ...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
    if (y1 <= y0) { y1 = y0 + 1; }
    const yt = ticks(y0, y1, 4);
    y1 = Math.max(y1, yt[yt.length - 1]);
    const W = o.width - m.l - m.r, H = o.height - m.t - m.b;
    const X = (t) => m.l + ((t - t0) / (t1 - t0)) * W;
    const Y = (v) => m.t + H - ((v - y0) / (y1 - y0)) * H;
    for (const v of yt) {
      svg("line", { x1: m.l, x2: m.l + W, y1: Y(v), y2: Y(v), class: "chart-grid" }, root);
      text(root, m.l - 6, Y(v) + 4, o.yFormat(v), { "text-anchor": "end" });
    }
    const xticks = ticks(t0, t1, 5).filter((t) => t >= t0 && t <= t1);
    for (const t of xticks) text(root, X(t), o.height - 6, clock(t, t1 - t0 < 600), { "text-anchor": "middle" });
    svg("line", { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, class: "chart-axis" }, root);
    series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      const valid = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
      if (valid.length === 0) return;
      const d = valid.map((p, k) => (k ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
      svg("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "chart-line" }, root);
      const last = valid[valid.length - 1];
      const dot = svg("circle", { cx: X(last[0]), cy: Y(last[1]), r: 3, fill: color }, root);
      svg("title", {}, dot).textContent = `${s.label}: ${o.yFormat(last[1])} at ${clock(last[0])}`;
    });
    return root;
  }

  // rows: [{label, value}] as horizontal bars.
  function bars(host, rows, opts) {
    const o = Object.assign({ width: widthOf(host, 640), barHeight: 22, yFormat: fmt, title: "" }, opts || {});
    const height = Math.max(40, rows.length * (o.barHeight + 6) + 10);
    const root = frame(host, o.width, height, o.title);
    if (rows.length === 0) {
      text(root, o.width / 2, 24, "nothing yet", { "text-anchor": "middle", class: "chart-empty" });
      return root;
    }
    const max = Math.max(...rows.map((r) => r.value), 1e-9);
    const left = 170, W = o.width - left - 70;
    rows.forEach((r, i) => {
      const y = 6 + i * (o.barHeight + 6);
      text(root, left - 8, y + o.barHeight * 0.7, r.label, { "text-anchor": "end" });
      svg("rect", { x: left, y, width: Math.max(1, (r.value / max) * W), height: o.barHeight,
        fill: r.color || PALETTE[i % PALETTE.length], rx: 3 }, root);
      text(root, left + Math.max(1, (r.value / max) * W) + 6, y + o.barHeight * 0.7, o.yFormat(r.value));
    });
    return root;
  }

  // rows: [{label, value, low, high}] as points with confidence-interval whiskers.
  function intervals(host, rows, opts) {
    const o = Object.assign({ width: widthOf(host, 640), rowHeight: 30, yFormat: fmt, title: "" }, opts || {});
    const height = Math.max(50, rows.length * o.rowHeight + 30);
    const root = frame(host, o.width, height, o.title);
    const vals = rows.flatMap((r) => [r.low, r.high, r.value]).filter((v) => v !== null && v !== undefined);
    if (vals.length === 0) {
      text(root, o.width / 2, 26, "no data yet", { "text-anchor": "middle", class: "chart-empty" });
      return root;
    }
    let lo = Math.min(0, ...vals), hi = Math.max(...vals);
    if (hi <= lo) hi = lo + 1;
    const left = 130, W = o.width - left - 20;
    const X = (v) => left + ((v - lo) / (hi - lo)) * W;
    for (const t of ticks(lo, hi, 4)) {
      svg("line", { x1: X(t), x2: X(t), y1: 4, y2: height - 22, class: "chart-grid" }, root);
      text(root, X(t), height - 6, o.yFormat(t), { "text-anchor": "middle" });
    }
    rows.forEach((r, i) => {
      const y = 16 + i * o.rowHeight;
      const color = PALETTE[i % PALETTE.length];
      text(root, left - 8, y + 4, r.label, { "text-anchor": "end" });
      if (r.low !== null && r.low !== undefined && r.high !== null && r.high !== undefined) {
        svg("line", { x1: X(r.low), x2: X(r.high), y1: y, y2: y, stroke: color, "stroke-width": 2 }, root);
        for (const v of [r.low, r.high]) svg("line", { x1: X(v), x2: X(v), y1: y - 6, y2: y + 6, stroke: color, "stroke-width": 2 }, root);
      }
      if (r.value !== null && r.value !== undefined) {
        const c = svg("circle", { cx: X(r.value), cy: y, r: 4, fill: color }, root);
        svg("title", {}, c).textContent = `${r.label}: ${o.yFormat(r.value)} [${o.yFormat(r.low)}, ${o.yFormat(r.high)}]`;
      }
    });
    return root;
  }

  return { timeSeries, bars, intervals, fmt, clock, PALETTE };
})();
