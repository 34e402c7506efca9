// roomfeed console: a small vanilla-JS app over the public HTTP API.
// Owns sign-in (key in sessionStorage, sent as Bearer), the operator views (dashboard, ranking
// config, experiments, models, alliances, merchants) and the merchant views (shop, codes).
// Every DOM node is built with textContent (never innerHTML from data): API values cannot inject.
"use strict";

const KEY_SLOT = "roomfeed.console.key";
const REFRESH_MS = 5000;
let timers = [];
let me = null;

// --- DOM and API helpers ------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiFailure extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_error";
    this.fields = err.fields || {};
  }
}

async function api(path, options) {
  const o = options || {};
  const headers = { Authorization: "Bearer " + (sessionStorage.getItem(KEY_SLOT) || "") };
  if (o.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method: o.method || "GET", headers, body: o.body === undefined ? undefined : JSON.stringify(o.body) });
  if (o.raw) {
    if (!res.ok) throw new ApiFailure(res.status, await res.json().catch(() => null));
    return res;
  }
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    if (res.status === 401 && !o.quiet401) signOut("Your key was not accepted; sign in again.");
    throw new ApiFailure(res.status, body);
  }
  return body;
}

// GET that answers null instead of throwing when the route is not deployed (404/405/503).
async function maybe(path) {
  try { return await api(path); } catch (e) {
    if (e instanceof ApiFailure && [404, 405, 503].includes(e.status)) return null;
    throw e;
  }
}

// Every item of a paged list (`?limit=&after=` → `{<key>: [...], next}`), following `next`;
// null when the route is not deployed.
async function everyPage(path, key) {
  let items = [];
  let after = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const body = await maybe(after ? `${path}${sep}after=${encodeURIComponent(after)}` : path);
    if (!body) return null;
    items = items.concat(body[key] || []);
    after = body.next || null;
  } while (after);
  return items;
}

async function imageUrl(path) {
  const res = await api(path, { raw: true });
  return URL.createObjectURL(await res.blob());
}

const pct = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(v < 0.1 ? 2 : 1) + "%");
const num = (v) => Charts.fmt(v);
const money = (v) => (v === null || v === undefined ? "–" : "¥" + Charts.fmt(v));
const when = (v) => (v ? new Date(typeof v === "number" ? v * 1000 : v).toLocaleString() : "–");

function banner(kind, message) {
  return h("p", { class: kind, role: kind === "error" ? "alert" : "status" }, message);
}

function failureText(e) {
  if (!(e instanceof ApiFailure)) return String(e);
  const fields = Object.entries(e.fields || {}).map(([k, v]) => `${k}: ${v}`).join("; ");
  return e.message + (fields ? ` (${fields})` : "");
}

function card(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

function table(columns, rows, rowAttrs) {
  return h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c.label)))),
    h("tbody", {}, rows.length === 0
      ? h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "nothing yet"))
      : rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {}, columns.map((c) => h("td", { class: c.cls || null }, c.render ? c.render(r) : (r[c.key] ?? "–")))))));
}

function every(ms, fn) {
  fn();
  timers.push(setInterval(fn, ms));
}

function clearTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

// --- sign in and navigation -----------------------------------------------------------------------

const OPERATOR_VIEWS = [
  ["dashboard", "Live", viewDashboard],
  ["config", "Ranking config", viewConfig],
  ["experiments", "Experiments", viewExperiments],
  ["models", "Models", viewModels],
  ["alliances", "Alliances", viewAlliances],
  ["merchants", "Merchants", viewMerchants],
  ["explain", "Viewer's feed", viewExplain],
];
const MERCHANT_VIEWS = [
  ["shop", "My shop", viewShop],
  ["codes", "Codes", viewCodes],
];

function views() { return me && me.role === "operator" ? OPERATOR_VIEWS : MERCHANT_VIEWS; }

function signOut(message) {
  sessionStorage.removeItem(KEY_SLOT);
  me = null;
  clearTimers();
  document.getElementById("view").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("nav").replaceChildren();
  document.getElementById("who").textContent = "";
  document.getElementById("sign-out").hidden = true;
  document.getElementById("sign-in-error").textContent = message || "";
  location.hash = "";
}

async function signIn(key) {
  sessionStorage.setItem(KEY_SLOT, key);
  try {
    me = await api("/v1/console/me", { quiet401: true });
  } catch (e) {
    sessionStorage.removeItem(KEY_SLOT);
    document.getElementById("sign-in-error").textContent =
      e instanceof ApiFailure && e.status === 401 ? "That key is not valid (or has been revoked)." : failureText(e);
    return;
  }
  document.getElementById("sign-in").hidden = true;
  document.getElementById("view").hidden = false;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("who").textContent = me.role === "operator" ? "operator" : `merchant ${me.merchant_id}`;
  const nav = document.getElementById("nav");
  nav.replaceChildren(...views().map(([id, label]) => h("a", { href: "#" + id, "data-view": id }, label)));
  route();
}

function route() {
  if (!me) return;
  const wanted = location.hash.slice(1);
  const found = views().find(([id]) => id === wanted) || views()[0];
  clearTimers();
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === found[0]));
  const view = document.getElementById("view");
  view.replaceChildren(h("h1", {}, found[1]));
  view.dataset.view = found[0];
  found[2](view).catch((e) => view.appendChild(banner("error", failureText(e))));
}

// --- operator: live dashboard --------------------------------------------------------------------

const STAT_CARDS = [
  ["rooms_live", "Rooms live", num],
  ["viewers_now", "Viewers now", num],
  ["enter_rate", "Enter rate", pct],
  ["avg_dwell_s", "Avg dwell (s)", num],
  ["swipe_away_rate", "Swipe-away", pct],
  ["conversion_per_visit", "Orders / visit", pct],
  ["conversion_per_visitor", "Orders / visitor", pct],
  ["gmv_per_1k_impressions", "GMV / 1k impr.", money],
  ["alliance_delivery", "Alliance delivery", pct],
  ["consumer_lag_total", "Consumer lag", num],
];

async function viewDashboard(view) {
  const stats = h("div", { class: "stats", id: "stats" });
  const note = h("p", { class: "muted", id: "dash-note" });
  const charts = {
    audience: h("div", { class: "chart-box", id: "chart-audience" }),
    funnel: h("div", { class: "chart-box", id: "chart-funnel" }),
    gmv: h("div", { class: "chart-box", id: "chart-gmv" }),
    lag: h("div", { class: "chart-box", id: "chart-lag" }),
  };
  view.append(stats, note,
    h("div", { class: "two" },
      card("Audience", charts.audience), card("Funnel", charts.funnel),
      card("GMV per 1,000 impressions", charts.gmv), card("Consumer lag (messages)", charts.lag)));
  every(REFRESH_MS, async () => {
    const m = await api("/v1/ops/metrics");
    const values = Object.assign({}, m, { alliance_delivery: m.alliance ? m.alliance.delivery_ratio : null });
    stats.replaceChildren(...STAT_CARDS.map(([key, label, f]) =>
      h("div", { class: "stat", "data-metric": key }, h("span", { class: "value" }, f(values[key])), h("span", { class: "label" }, label))));
    note.textContent = `Last hour · updated ${new Date().toLocaleTimeString()}` +
      (m.unavailable && m.unavailable.length ? ` · not answering: ${m.unavailable.join(", ")}` : "");
  });
  every(10_000, async () => {
    const { samples } = await api("/v1/ops/metrics/history?minutes=60");
    const line = (key, label) => ({ label, points: samples.map((s) => [s.at, s[key]]) });
    Charts.timeSeries(charts.audience, [line("viewers_now", "viewers now"), line("rooms_live", "rooms live")]);
    Charts.timeSeries(charts.funnel, [line("enter_rate", "enter rate"), line("conversion_per_visit", "orders/visit"),
      line("swipe_away_rate", "swipe-away")], { yFormat: (v) => (v * 100).toFixed(0) + "%" });
    Charts.timeSeries(charts.gmv, [line("gmv_per_1k_impressions", "GMV / 1k impressions")], { yFormat: money });
    Charts.timeSeries(charts.lag, [line("consumer_lag_total", "all consumer groups")]);
  });
}

// --- operator: ranking config --------------------------------------------------------------------

async function viewConfig(view) {
  const holder = h("div");
  view.appendChild(holder);
  await renderConfig(holder);
}

async function renderConfig(holder, message) {
  const current = await api("/v1/ops/ranking-config");
  const historyBody = await api("/v1/ops/ranking-config/history");
  const history = Array.isArray(historyBody) ? historyBody : historyBody.versions || historyBody.history || [];
  const config = current.config || {};
  const status = h("div", { id: "config-status" }, message ? banner("ok", message) : null);
  const inputs = {};
  const form = h("form", { id: "config-form", class: "config-form", novalidate: true },
    Object.entries(config).map(([name, value]) => {
      inputs[name] = h("input", { name, id: "cfg-" + name, value, inputmode: "decimal" });
      return h("div", { class: "field", "data-field": name },
        h("label", { for: "cfg-" + name }, name), inputs[name], h("span", { class: "field-error" }));
    }),
    h("div", { class: "field wide" }, h("label", { for: "cfg-note" }, "note"), h("input", { id: "cfg-note", name: "note", placeholder: "why this change" })),
    h("button", { type: "submit" }, "Save new version"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    form.querySelectorAll(".field").forEach((f) => f.classList.remove("invalid"));
    form.querySelectorAll(".field-error").forEach((f) => (f.textContent = ""));
    const values = {};
    for (const [name, input] of Object.entries(inputs)) {
      const raw = input.value.trim();
      const parsed = raw === "" ? raw : Number(raw);
      if (String(parsed) !== String(config[name])) values[name] = Number.isNaN(parsed) ? raw : parsed;
    }
    if (Object.keys(values).length === 0) { status.replaceChildren(banner("muted", "Nothing changed.")); return; }
    try {
      const saved = await api("/v1/ops/ranking-config", { method: "PUT", body: {
        config: values, expected_version: current.version, note: document.getElementById("cfg-note").value } });
      await renderConfig(holder, `Saved: version ${saved.version}.`);
    } catch (e) {
      if (e instanceof ApiFailure) {
        for (const [path, reason] of Object.entries(e.fields)) {
          const name = path.split(".").pop();
          const field = form.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
          if (field) { field.classList.add("invalid"); field.querySelector(".field-error").textContent = reason; }
        }
      }
      status.replaceChildren(banner("error", failureText(e)));
    }
  });
  const diffText = (d) => Object.entries(d || {}).map(([k, v]) => `${k}: ${v.from} → ${v.to}`).join(", ") || "–";
  holder.replaceChildren(
    card(`Version ${current.version}`, h("p", { class: "muted" }, `by ${current.author || "–"} · ${when(current.created_at)}`), status, form),
    card("History", table([
      { label: "version", key: "version" },
      { label: "author", key: "author" },
      { label: "when", render: (r) => when(r.created_at) },
      { label: "change", render: (r) => diffText(r.diff), cls: "diff" },
      { label: "note", key: "note" },
      { label: "", render: (r) => r.version === current.version ? h("span", { class: "tag" }, "current")
        : h("button", { class: "small", onclick: async () => {
          try {
            await api("/v1/ops/ranking-config/rollback", { method: "POST", body: { version: r.version } });
            await renderConfig(holder, `Rolled back to the values of version ${r.version}.`);
          } catch (e) { status.replaceChildren(banner("error", failureText(e))); }
        } }, `Roll back to ${r.version}`) },
    ], history)));
}

// --- operator: experiments -----------------------------------------------------------------------

const EXPERIMENT_SLOT = "roomfeed.console.experiments";
const seconds = (ms) => (ms === null || ms === undefined ? "–" : (ms / 1000).toFixed(1) + " s");
const VARIANT_METRICS = [
  ["enter_rate", "Enter rate", pct],
  ["average_dwell_ms", "Avg dwell", seconds],
  ["swipe_away_rate", "Swipe-away", pct],
  ["conversion", "Orders / visit", pct],
  ["gmv_per_1000_impressions", "GMV / 1k impr.", money],
];

function rememberedExperiments() {
  try { return JSON.parse(sessionStorage.getItem(EXPERIMENT_SLOT) || "[]"); } catch { return []; }
}

async function viewExperiments(view) {
  const list = h("div");
  const status = h("div");
  const variants = h("div", { class: "variants" });
  const addVariant = (name, share, overrides) => variants.appendChild(h("div", { class: "variant-row" },
    h("input", { name: "variant-name", value: name, placeholder: "variant name" }),
    h("input", { name: "variant-share", value: share, placeholder: "traffic %", inputmode: "decimal" }),
    h("input", { name: "variant-overrides", value: overrides, placeholder: "overrides, e.g. w_popularity=0.5", class: "wide" })));
  addVariant("control", 50, "");
  addVariant("treatment", 50, "w_popularity=0.6");
  const form = h("form", { id: "experiment-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "exp-name" }, "name"), h("input", { id: "exp-name", name: "name", required: true })),
    h("p", { class: "muted" }, "Variants: traffic split in percent (summing to 100) and ranking-config overrides."),
    variants,
    h("button", { type: "button", class: "small", onclick: () => addVariant("", "", "") }, "+ variant"),
    h("button", { type: "submit" }, "Start experiment"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const rows = [...variants.querySelectorAll(".variant-row")].map((row) => {
      const [n, s, o] = row.querySelectorAll("input");
      const overrides = {};
      for (const part of o.value.split(/[,;\s]+/).filter(Boolean)) {
        const [k, v] = part.split("=");
        overrides[k] = v === undefined ? v : Number(v);
      }
      return { name: n.value.trim(), weight: Number(s.value) / 100, config: overrides };
    }).filter((v) => v.name);
    try {
      const made = await api("/v1/ops/experiments", { method: "POST", body: { name: document.getElementById("exp-name").value, variants: rows } });
      const id = made.experiment_id || made.id;
      sessionStorage.setItem(EXPERIMENT_SLOT, JSON.stringify([id, ...rememberedExperiments().filter((x) => x !== id)]));
      status.replaceChildren(banner("ok", `Experiment ${id} started.`));
      await renderExperiments(list);
    } catch (e) { status.replaceChildren(banner("error", failureText(e))); }
  });
  view.append(card("New experiment", form, status), list);
  every(10_000, () => renderExperiments(list));
}

async function renderExperiments(list) {
  const listed = await maybe("/v1/ops/experiments");
  const ids = new Set(rememberedExperiments());
  const rows = listed ? (Array.isArray(listed) ? listed : listed.experiments || []) : [];
  rows.forEach((x) => ids.add(x.experiment_id || x.id));
  const cards = [];
  for (const id of ids) {
    if (!id) continue;
    const x = await maybe(`/v1/ops/experiments/${encodeURIComponent(id)}`);
    if (!x) continue;
    const vs = x.variants || [];
    const metricOf = (v) => v.metrics || {};
    const charts = h("div", { class: "two" }, VARIANT_METRICS.map(([key, label, f]) => {
      const box = h("div", { class: "chart-box" });
      Charts.intervals(box, vs.map((v) => {
        const m = metricOf(v)[key];
        const value = m && typeof m === "object" ? m.value : m;
        const ci = m && typeof m === "object" ? (m.ci || [m.low, m.high]) : [null, null];
        return { label: v.name, value, low: ci[0], high: ci[1] };
      }), { yFormat: (v) => (f === pct ? (v * 100).toFixed(1) + "%" : f === seconds ? (v / 1000).toFixed(0) + "s" : Charts.fmt(v)) });
      return h("div", {}, h("h3", {}, label + " (95% CI)"), box);
    }));
    const stop = x.status === "running" ? h("button", { class: "small", onclick: async () => {
      await api(`/v1/ops/experiments/${encodeURIComponent(id)}/stop`, { method: "POST", body: {} });
      await renderExperiments(list);
    } }, "Stop") : null;
    cards.push(card(`${x.name || id} · ${x.status || ""}`, stop, (x.notes || []).map((n) => h("p", { class: "muted" }, n)),
      table([{ label: "variant", key: "name" },
        { label: "traffic", render: (v) => pct(v.weight) },
        { label: "overrides", render: (v) => Object.entries(v.config || {}).map(([k, val]) => `${k}=${val}`).join(", ") || "–" },
        { label: "impressions", render: (v) => num(metricOf(v).impressions ?? null) },
        ...VARIANT_METRICS.map(([key, label, f]) => ({ label, render: (v) => {
          const m = metricOf(v)[key];
          if (m && typeof m === "object") {
            const ci = m.ci || [m.low, m.high];
            return `${f(m.value)} [${f(ci[0])}, ${f(ci[1])}]`;
          }
          return f(m);
        } }))], vs), charts));
  }
  list.replaceChildren(...(cards.length ? cards : [card("Experiments", h("p", { class: "muted" }, "No experiments yet."))]));
}

// --- operator: models ------------------------------------------------------------------------------

async function viewModels(view) {
  const holder = h("div");
  view.appendChild(holder);
  await renderModels(holder);
}

// The registry's holdout metrics (ranking/train.py): the ranker vs popularity on the last hours.
const EVAL_KEYS = ["hr5_ranker", "ndcg10_ranker", "hr5_best_baseline", "ndcg10_best_baseline", "hr5_serving", "hr5_new_ranker", "hr5_discovery_ranker", "interactions"];

function evalNumbers(m) {
  const out = {};
  for (const [k, v] of Object.entries(m.metrics || {})) if (typeof v === "number") out[k] = v;
  return out;
}

async function renderModels(holder, message) {
  const body = await api("/v1/ops/models");
  const models = body.models || [];
  const promoted = models.find((m) => m.status === "promoted");
  const serving = body.serving || (promoted ? promoted.version : null);
  const status = h("div", { id: "models-status" }, message ? banner("ok", message) : null);
  const present = new Set(models.flatMap((m) => Object.keys(evalNumbers(m))));
  const keys = [...EVAL_KEYS.filter((k) => present.has(k)), ...[...present].filter((k) => !EVAL_KEYS.includes(k))].slice(0, 7);
  const act = (label, path, done) => h("button", { class: "small", onclick: async () => {
    try { await api(path, { method: "POST", body: {} }); await renderModels(holder, done); }
    catch (e) { status.replaceChildren(banner("error", failureText(e))); }
  } }, label);
  const chart = h("div", { class: "chart-box wide", id: "chart-models" });
  const plot = h("div", { class: "plot", id: "model-plot" });
  holder.replaceChildren(
    card("Model versions", status,
      h("p", {}, "Serving: ", h("strong", { id: "serving-model" }, serving ?? "none (popularity only)"), " ",
        promoted ? act("Roll back", "/v1/ops/models/rollback", "Rolled back to the previous model.") : null),
      table([
        { label: "version", render: (m) => String(m.version) },
        { label: "trained", render: (m) => when(m.created_at) },
        ...keys.map((k) => ({ label: k, render: (m) => { const v = evalNumbers(m)[k]; return v === undefined ? "–" : (Number.isInteger(v) ? String(v) : v.toFixed(3)); } })),
        { label: "status", render: (m) => m.status === "promoted" ? h("span", { class: "tag" }, "serving") : (m.status || "") },
        // The promotion gate's decision and why (ranking.registry.gate): promoted, kept the serving model,
        // or ranks by the best simple baseline.
        { label: "gate", render: (m) => (m.metrics || {}).gate_reason ? h("span", { class: "gate", title: (m.metrics || {}).gate || "" }, `${(m.metrics || {}).gate}: ${(m.metrics || {}).gate_reason}`) : "–" },
        { label: "promoted by", render: (m) => m.promoted_by || "–" },
        { label: "", render: (m) => m.status === "promoted" ? null
          : act("Promote", `/v1/ops/models/${encodeURIComponent(m.version)}/promote`, `Model ${m.version} promoted.`) },
      ], models)),
    card("Holdout quality by version (higher is better)", chart),
    card("Offline evaluation plot", plot));
  const series = [["hr5_ranker", "HR@5 ranker"], ["ndcg10_ranker", "NDCG@10 ranker"], ["hr5_pop", "HR@5 popularity"]]
    .map(([k, label]) => ({ label, points: models.filter((m) => evalNumbers(m)[k] !== undefined)
      .map((m) => [Date.parse(m.created_at) / 1000, evalNumbers(m)[k]]).sort((a, b) => a[0] - b[0]) }));
  Charts.timeSeries(chart, series, { yFormat: (v) => v.toFixed(2) });
  const shown = serving || (models[0] && models[0].version);
  if (shown) await showPlot(plot, shown);
}

async function showPlot(plot, version) {
  try {
    const url = await imageUrl(`/v1/ops/models/${encodeURIComponent(version)}/plot.png`);
    plot.replaceChildren(h("img", { src: url, alt: `evaluation plot for model ${version}` }));
  } catch (e) {
    plot.replaceChildren(h("p", { class: "muted" }, failureText(e)));
  }
}

// --- operator: alliances ------------------------------------------------------------------------

async function viewAlliances(view) {
  const picker = h("select", { id: "alliance-measure", class: "inline" },
    ["balance", "earned", "delivered"].map((k) => h("option", { value: k }, k)));
  const chart = h("div", { class: "chart-box wide", id: "chart-alliance" });
  const tableBox = h("div");
  view.append(card("Per merchant over time", h("label", {}, "show ", picker), chart), card("Accounts now", tableBox));
  let series = {};
  const names = {};
  for (const m of (await everyPage("/v1/ops/merchants?limit=1000", "merchants")) || []) names[m.merchant_id] = m.name;
  const nameOf = (mid) => names[mid] || mid;
  const draw = () => {
    const key = picker.value;
    // The eight merchants with the largest current value of the chosen measure.
    const top = Object.entries(series).sort((a, b) => (b[1][b[1].length - 1] || {})[key] - (a[1][a[1].length - 1] || {})[key]).slice(0, 8);
    Charts.timeSeries(chart, top.map(([mid, pts]) => ({ label: nameOf(mid), points: pts.map((p) => [p.at, p[key]]) })), { height: 280 });
  };
  picker.addEventListener("change", draw);
  every(10_000, async () => {
    series = (await api("/v1/ops/metrics/alliance-history?minutes=120")).merchants || {};
    draw();
    const m = await api("/v1/ops/metrics");
    const overview = await maybe("/v1/ops/alliances");
    tableBox.replaceChildren(table([
      { label: "merchant", render: (a) => `${nameOf(a.merchant_id)} (${a.merchant_id})` },
      { label: "earned", render: (a) => num(a.earned) },
      { label: "delivered", render: (a) => num(a.delivered) },
      { label: "balance", render: (a) => num(a.balance) },
      { label: "delivery", render: (a) => pct(a.earned > 0 ? a.delivered / a.earned : null) },
    ], m.alliance_accounts || []),
    h("p", { class: "muted" }, overview && overview.totals ? `Totals: earned ${num(overview.totals.earned)}, delivered ${num(overview.totals.delivered)}, balance ${num(overview.totals.balance)}` : ""));
  });
}

// --- operator: merchants ------------------------------------------------------------------------

async function viewMerchants(view) {
  const status = h("div");
  const list = h("div");
  const form = h("form", { id: "merchant-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "mer-name" }, "name"), h("input", { id: "mer-name", name: "name" }), h("span", { class: "field-error" })),
    h("div", { class: "field" }, h("label", { for: "mer-category" }, "category"), h("input", { id: "mer-category", name: "category", placeholder: "beauty" }), h("span", { class: "field-error" })),
    h("button", { type: "submit" }, "Create merchant"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: document.getElementById("mer-name").value };
    const category = document.getElementById("mer-category").value.trim();
    if (category) body.category = category;
    try {
      const made = await api("/v1/ops/merchants", { method: "POST", body });
      status.replaceChildren(banner("ok", `Merchant ${made.merchant_id} created. Its key (shown once): `), h("code", { class: "secret" }, made.key));
      await renderMerchantList(list);
    } catch (e) { status.replaceChildren(banner("error", failureText(e))); }
  });
  view.append(card("New merchant", form, status), list);
  await renderMerchantList(list);
}

async function renderMerchantList(list) {
  const rows = (await everyPage("/v1/ops/merchants?limit=500", "merchants")) || [];
  list.replaceChildren(card("Merchants", table([
    { label: "merchant", key: "merchant_id" }, { label: "name", key: "name" },
    { label: "category", render: (r) => r.category || "–" }, { label: "created", render: (r) => when(r.created_at) },
  ], rows)));
}

// --- operator: what a viewer would see, and why -------------------------------------------------

const TERM_ORDER = ["lightfm", "popularity", "history", "session", "other_columns", "conversion", "freshness", "session_penalty"];
const fixed = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));

async function viewExplain(view) {
  const status = h("div");
  const result = h("div", { id: "explain-result" });
  const form = h("form", { id: "explain-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "explain-viewer" }, "viewer id"), h("input", { id: "explain-viewer", name: "viewer_id", placeholder: "v-123" }), h("span", { class: "field-error" })),
    h("div", { class: "field" }, h("label", { for: "explain-count" }, "rooms"), h("input", { id: "explain-count", name: "count", type: "number", min: 1, max: 50, value: 10 }), h("span", { class: "field-error" })),
    h("button", { type: "submit" }, "Explain"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    result.replaceChildren();
    const viewer = document.getElementById("explain-viewer").value.trim();
    const count = document.getElementById("explain-count").value;
    try {
      const preview = await api(`/v1/ops/viewers/${encodeURIComponent(viewer)}/feed?explain=true&count=${encodeURIComponent(count)}`);
      renderExplain(result, preview);
    } catch (e) {
      status.replaceChildren(banner("error", failureText(e)));
    }
  });
  view.append(card("What would this viewer see next, and why?", h("p", { class: "muted" },
    "The feed's own pipeline for this viewer now (their blocks, recent visits and experiment arm). Nothing is served or recorded."), form, status), result);
}

function renderExplain(box, preview) {
  const terms = TERM_ORDER.filter((t) => preview.rooms.some((r) => r.explain && t in r.explain.terms));
  const columns = [
    { label: "#", render: (r) => String(r.position) },
    { label: "room", render: (r) => `${r.title} (${r.room_id})` },
    { label: "merchant", key: "merchant_id" },
    { label: "score", cls: "num", render: (r) => fixed(r.explain && r.explain.score) },
    { label: "LightFM", cls: "num", render: (r) => fixed(r.explain && r.explain.model_score) },
    ...terms.map((t) => ({ label: t.replace("_", " "), cls: "num", render: (r) => fixed(r.explain && r.explain.terms[t]) })),
    { label: "heat", render: (r) => Object.entries((r.explain && r.explain.signals) || {}).map(([k, v]) => `${k} ${num(v)}`).join(", ") || "–" },
    { label: "placed by", render: (r) => (r.explain && r.explain.explored ? "exploration" : "rank") },
  ];
  box.replaceChildren(card(`${preview.viewer_id}: ${preview.rooms.length} of ${preview.candidates} live rooms`,
    h("p", { class: "muted" }, `model ${preview.model_version} · config v${preview.config_version} · arm ${preview.variant}` +
      (preview.experiment_id ? ` of ${preview.experiment_id}` : "") + ` · ${preview.recent_visits} recent visits`),
    table(columns, preview.rooms, (r) => ({ "data-room": r.room_id })),
    ...(preview.notes || []).map((n) => h("p", { class: "muted" }, n))));
}

// --- merchant: shop and codes -------------------------------------------------------------------

async function viewShop(view) {
  const mid = me.merchant_id;
  const rooms = await maybe("/v1/rooms");
  const ledger = await maybe(`/v1/merchants/${encodeURIComponent(mid)}/ledger`);
  const roomRows = rooms ? (Array.isArray(rooms) ? rooms : rooms.rooms || []) : [];
  view.appendChild(card("Rooms", table([
    { label: "room", key: "room_id" }, { label: "title", key: "title" }, { label: "status", key: "status" },
    { label: "category", key: "category" }, { label: "started", render: (r) => when(r.started_at) },
  ], roomRows)));
  if (!ledger) { view.appendChild(card("Alliance ledger", h("p", { class: "muted" }, "No ledger yet."))); return; }
  const l = ledger.ledger || ledger;
  const attributed = l.attributed || {};
  const gmvTotal = (attributed.gmv || []).reduce((sum, g) => sum + Number(g.gmv || 0), 0);
  const stat = (label, v, f) => h("div", { class: "stat" }, h("span", { class: "value" }, (f || num)(v)), h("span", { class: "label" }, label));
  view.appendChild(card("Alliance ledger", h("div", { class: "stats", id: "ledger-stats" },
    stat("Contributed visits", l.contributed_visits), stat("Earned exposure", l.earned),
    stat("Delivered exposure", l.delivered), stat("Balance", l.balance),
    stat("Attributed orders", attributed.orders ?? 0), stat("Attributed GMV", gmvTotal, money)),
    table([{ label: "alliance", render: (a) => a.name || a.alliance_id }, { label: "visits", render: (a) => num(a.contributed_visits) },
      { label: "earned", render: (a) => num(a.earned) }, { label: "delivered", render: (a) => num(a.delivered) },
      { label: "balance", render: (a) => num(a.balance) }], l.alliances || [])));
  const balance = h("div", { class: "chart-box wide" });
  view.appendChild(card("Exposure over the last 24 h", balance));
  Charts.timeSeries(balance, ["earned", "delivered", "balance"].map((k) => ({ label: k, points: (me.alliance_history || []).map((p) => [p.at, p[k]]) })));
  const salesBy = (rows, idKey) => (rows || []).map((r) => ({ label: `${r[idKey]} (${r.currency})`, value: Number(r.gmv || 0) }));
  const byStore = h("div", { class: "chart-box", id: "sales-by-store" }), byStaff = h("div", { class: "chart-box", id: "sales-by-staff" });
  const salesTable = (rows, idKey, label) => table([{ label, render: (r) => r[idKey] }, { label: "orders", render: (r) => num(r.orders) },
    { label: "GMV", render: (r) => `${money(r.gmv)} ${r.currency || ""}` }], rows || []);
  view.appendChild(h("div", { class: "two" },
    card("Attributed sales by store", byStore, salesTable(attributed.by_store, "store_id", "store")),
    card("Attributed sales by staff", byStaff, salesTable(attributed.by_staff, "staff_id", "staff"))));
  Charts.bars(byStore, salesBy(attributed.by_store, "store_id"), { yFormat: money });
  Charts.bars(byStaff, salesBy(attributed.by_staff, "staff_id"), { yFormat: money });
}

const CODE_SLOT = "roomfeed.console.codes";

async function viewCodes(view) {
  const status = h("div");
  const gallery = h("div", { class: "codes", id: "codes" });
  const form = h("form", { id: "code-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "code-store" }, "store id (optional)"), h("input", { id: "code-store" }), h("span", { class: "field-error" })),
    h("div", { class: "field" }, h("label", { for: "code-staff" }, "staff id (optional)"), h("input", { id: "code-staff" }), h("span", { class: "field-error" })),
    h("button", { type: "submit" }, "Create code"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    const store = document.getElementById("code-store").value.trim();
    const staff = document.getElementById("code-staff").value.trim();
    if (store) body.store_id = store;
    if (staff) body.staff_id = staff;
    try {
      const made = await api("/v1/codes", { method: "POST", body });
      const saved = JSON.parse(sessionStorage.getItem(CODE_SLOT) || "[]");
      sessionStorage.setItem(CODE_SLOT, JSON.stringify([made, ...saved.filter((c) => c.code !== made.code)]));
      status.replaceChildren(banner("ok", `Code created: ${made.url}`));
      await renderCodes(gallery);
    } catch (e) { status.replaceChildren(banner("error", failureText(e))); }
  });
  view.append(card("New attribution code", form, status), card("Codes", gallery));
  await renderCodes(gallery);
}

async function renderCodes(gallery) {
  const listed = await maybe("/v1/codes");
  const rows = listed ? (Array.isArray(listed) ? listed : listed.codes || []) : [];
  const seen = new Set(rows.map((c) => c.code));
  for (const c of JSON.parse(sessionStorage.getItem(CODE_SLOT) || "[]")) if (!seen.has(c.code)) rows.push(c);
  const tiles = await Promise.all(rows.map(async (c) => {
    let img;
    try { img = h("img", { src: await imageUrl(`/v1/codes/${encodeURIComponent(c.code)}.png`), alt: `QR code ${c.code}` }); }
    catch (e) { img = h("span", { class: "muted" }, "QR unavailable"); }
    return h("figure", { class: "code" }, img, h("figcaption", {}, h("code", {}, c.code),
      h("br"), c.url ? h("a", { href: c.url, rel: "noreferrer" }, c.url) : null,
      h("br"), [c.store_id && `store ${c.store_id}`, c.staff_id && `staff ${c.staff_id}`].filter(Boolean).join(" · ")));
  }));
  gallery.replaceChildren(...(tiles.length ? tiles : [h("p", { class: "muted" }, "No codes yet.")]));
}

// --- start --------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("key");
    signIn(input.value.trim());
    input.value = "";
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", route);
  const saved = sessionStorage.getItem(KEY_SLOT);
  if (saved) signIn(saved);
});
