// polybot dashboard: one server-sent-event stream (/api/stream) brings every
// strategy's view each second and the recent system events when they change;
// rows are updated in place and paged, each strategy's PnL history is drawn
// on a canvas by hand, and one strategy at a time can be opened to show its
// orders and trades (read from the API while the panel is open).
"use strict";
const HISTORY = 120;
const PAGE = 50;
const DETAIL_EVERY_MS = 3000;
const history = new Map(); // name -> [pnl, ...]
const rows = new Map(); // name -> {tr, cells, canvas, button}
let token = sessionStorage.getItem("polybot-token");
let source = null;
let views = [];
let page = 0;
let detail = { name: null, timer: null };
// What the page has received, for people and tests alike.
window.polybotStream = { strategies: 0, events: 0, errors: 0 };

const $ = (id) => document.getElementById(id);

function showError(text) {
  const e = $("error");
  e.textContent = text || "";
  e.classList.toggle("hidden", !text);
}

function askToken() {
  $("main").classList.add("hidden");
  $("login").classList.remove("hidden");
  $("token").focus();
}

function forget() {
  sessionStorage.removeItem("polybot-token");
  token = null;
  if (source) { source.close(); source = null; }
  closeDetail();
  askToken();
}

async function api(method, path) {
  const r = await fetch(path, { method, headers: { Authorization: "Bearer " + token } });
  if (r.status === 401) {
    forget();
    throw new Error("the token was refused");
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function age(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}

function time(ms) {
  return new Date(ms).toLocaleTimeString();
}

function draw(canvas, points) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  let lo = Math.min(0, ...points), hi = Math.max(0, ...points);
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const x = (i) => (i / (HISTORY - 1)) * (w - 2) + 1;
  const y = (v) => h - 1 - ((v - lo) / (hi - lo)) * (h - 2);
  ctx.strokeStyle = "#2a3440";
  ctx.beginPath(); ctx.moveTo(0, y(0)); ctx.lineTo(w, y(0)); ctx.stroke();
  ctx.strokeStyle = points[points.length - 1] >= 0 ? "#3fb950" : "#f85149";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  const start = HISTORY - points.length;
  points.forEach((v, i) => (i ? ctx.lineTo(x(start + i), y(v)) : ctx.moveTo(x(start + i), y(v))));
  ctx.stroke();
}

function row(name) {
  let r = rows.get(name);
  if (r) return r;
  const tr = document.createElement("tr");
  tr.dataset.name = name;
  const cells = {};
  for (const key of ["name", "state", "restarts", "events", "orders", "fills", "intents", "pnl",
                     "chart", "last", "feed", "breakers", "ckpt", "act"]) {
    const td = document.createElement("td");
    if (key === "name" || key === "state") td.className = key;
    tr.appendChild(td);
    cells[key] = td;
  }
  const open = document.createElement("button");
  open.className = "open";
  open.textContent = name;
  open.title = "show its orders and trades";
  open.addEventListener("click", () => openDetail(name));
  cells.name.appendChild(open);
  const canvas = document.createElement("canvas");
  canvas.width = 160; canvas.height = 28;
  canvas.className = "pnl-chart";
  cells.chart.appendChild(canvas);
  const button = document.createElement("button");
  button.className = "toggle";
  button.addEventListener("click", async () => {
    const action = button.dataset.action;
    button.disabled = true;
    try {
      await api("POST", "/api/strategies/" + encodeURIComponent(name) + "/" + action);
      showError("");
    } catch (e) { showError(name + ": " + e.message); }
    setTimeout(() => { button.disabled = false; }, 500);
  });
  cells.act.appendChild(button);
  r = { tr, cells, canvas, button };
  rows.set(name, r);
  $("rows").appendChild(tr);
  return r;
}

// Intents still working at the venue (or not known to have stopped).
function openIntents(v) {
  const i = v.intents || {};
  return (i.pending || 0) + (i.sent || 0) + (i.acknowledged || 0) +
    (i["partially-filled"] || 0) + (i.unknown || 0);
}

function breakers(cell, v) {
  const bad = Object.entries(v.breakers || {}).filter(([, s]) => s !== "closed");
  cell.textContent = bad.length ? bad.map(([g, s]) => g + " " + s).join(", ") : "closed";
  cell.className = bad.length ? (bad.some(([, s]) => s === "open") ? "bk-open" : "bk-half-open")
    : "bk-closed";
}

function render() {
  const seen = new Set();
  const counts = {};
  const filter = $("filter").value.trim().toLowerCase();
  const shown = views.filter((v) => filter === "" || v.name.toLowerCase().includes(filter));
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  page = Math.min(page, pages - 1);
  const onPage = new Set(shown.slice(page * PAGE, (page + 1) * PAGE).map((v) => v.name));
  for (const v of views) {
    seen.add(v.name);
    counts[v.state] = (counts[v.state] || 0) + 1;
    const h = history.get(v.name) || [];
    h.push(v.pnl);
    if (h.length > HISTORY) h.shift();
    history.set(v.name, h);
    const r = row(v.name);
    const visible = onPage.has(v.name);
    r.tr.classList.toggle("hidden", !visible);
    if (!visible) continue;
    r.cells.state.innerHTML = "";
    const badge = document.createElement("span");
    badge.className = "s-" + v.state;
    badge.textContent = v.state;
    if (v.last_fault) badge.title = v.last_fault;
    r.cells.state.appendChild(badge);
    const trying = v.shadow ? "shadow" : v.probation ? "probation" : null;
    if (trying) {
      const mark = document.createElement("span");
      mark.className = "swap-mode";
      mark.textContent = " · " + trying;
      mark.title = "open the strategy for its " + trying;
      r.cells.state.appendChild(mark);
    }
    r.cells.restarts.textContent = v.restarts;
    r.cells.events.textContent = v.last_seq;
    r.cells.orders.textContent = v.orders;
    r.cells.fills.textContent = v.fills;
    r.cells.intents.textContent = openIntents(v);
    r.cells.pnl.textContent = (v.pnl >= 0 ? "+" : "") + v.pnl.toFixed(2);
    r.cells.pnl.className = v.pnl >= 0 ? "pos" : "neg";
    r.cells.last.textContent = age(v.last_handled_age_ms);
    r.cells.feed.textContent = age(v.feed_age_ms);
    breakers(r.cells.breakers, v);
    r.cells.ckpt.textContent = "#" + v.last_checkpoint_seq + " · " + age(v.checkpoint_age_ms);
    const paused = v.state === "paused";
    r.button.dataset.action = paused ? "resume" : "pause";
    r.button.textContent = paused ? "resume" : "pause";
    draw(r.canvas, h);
  }
  for (const [name, r] of rows) {
    if (!seen.has(name)) { r.tr.remove(); rows.delete(name); history.delete(name); }
  }
  $("page").textContent = "page " + (page + 1) + " of " + pages + " · " + shown.length + " shown";
  $("prev").disabled = page === 0;
  $("next").disabled = page >= pages - 1;
  const parts = Object.entries(counts).map(([s, n]) => n + " " + s);
  $("summary").textContent = views.length + " strategies: " + parts.join(", ") +
    " · updated " + new Date().toLocaleTimeString();
}

function renderEvents(events) {
  const list = $("event-list");
  list.innerHTML = "";
  for (const e of events) {
    const li = document.createElement("li");
    for (const [cls, text] of [["t", time(e.timestamp_ms)], ["k", e.event_type],
                               ["c", e.component], ["m", e.message]]) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text + " ";
      li.appendChild(span);
    }
    li.title = e.message;
    list.appendChild(li);
  }
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

async function loadDetail() {
  const name = detail.name;
  if (!name) return;
  const base = "/api/strategies/" + encodeURIComponent(name);
  try {
    const [o, t] = await Promise.all([api("GET", base + "/orders?limit=50"),
                                      api("GET", base + "/trades?limit=50")]);
    if (detail.name !== name) return;
    const orders = $("detail-orders");
    orders.innerHTML = "";
    for (const x of o.orders.slice().reverse()) {
      const tr = document.createElement("tr");
      cell(tr, x.intent_id, "name"); cell(tr, x.seq); cell(tr, x.side); cell(tr, x.market);
      cell(tr, x.price.toFixed(3)); cell(tr, x.size); cell(tr, x.order_type, "name");
      orders.appendChild(tr);
    }
    const trades = $("detail-trades");
    trades.innerHTML = "";
    for (const x of t.trades.slice().reverse()) {
      const tr = document.createElement("tr");
      cell(tr, x.seq); cell(tr, x.side); cell(tr, x.market); cell(tr, x.price.toFixed(3));
      cell(tr, x.size); cell(tr, (x.pnl >= 0 ? "+" : "") + x.pnl.toFixed(2), x.pnl >= 0 ? "pos" : "neg");
      cell(tr, time(x.executed_at_ms));
      trades.appendChild(tr);
    }
    $("detail-title").textContent = name + ": newest " + o.orders.length + " orders, " +
      t.trades.length + " trades";
  } catch (e) { showError(name + ": " + e.message); }
}

// The strategy's running shadow or probation and its last swap, from the
// streamed view (nothing is asked for): [label, value] pairs.
function swapFacts(v) {
  const short = (d) => (d || "").slice(0, 12);
  const facts = [];
  if (v.shadow) {
    const s = v.shadow;
    facts.push(["mode", "shadow"], ["candidate", short(s.digest)], ["live", short(s.live_digest)],
      ["since seq", s.since_seq], ["events compared", s.events], ["divergences", s.divergences],
      ["recorded actions", s.actions + " (" + s.orders + " orders, never sent)"],
      ["paper fills", s.paper_fills],
      ["would-be pnl", (s.would_be_pnl >= 0 ? "+" : "") + s.would_be_pnl.toFixed(2) +
        " (live " + (v.pnl >= 0 ? "+" : "") + v.pnl.toFixed(2) + ")"]);
  }
  if (v.probation) {
    const p = v.probation;
    facts.push(["mode", "probation"], ["candidate", short(p.digest)],
      ["previous", short(p.previous_digest)], ["since seq", p.since_seq],
      ["events compared", p.events + " of " + p.events_needed], ["divergences", v.divergences],
      ["faults", p.faults + " of " + p.faults_allowed + " allowed"]);
  }
  if (v.last_swap) {
    const l = v.last_swap;
    facts.push(["last swap", l.kind + " (" + l.mode + ") at seq " + l.at_seq +
      (l.pause_us !== null && l.pause_us !== undefined ? ", pause " + (l.pause_us / 1000).toFixed(2) + " ms" : "") +
      (l.reason ? ": " + l.reason : "")]);
  }
  return facts;
}

function renderSwap() {
  const dl = $("detail-swap");
  const v = views.find((x) => x.name === detail.name);
  const facts = v ? swapFacts(v) : [];
  dl.innerHTML = "";
  for (const [label, value] of facts) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    dd.dataset.fact = label;
    dl.append(dt, dd);
  }
  dl.classList.toggle("hidden", facts.length === 0);
}

function openDetail(name) {
  closeDetail();
  detail.name = name;
  $("detail-title").textContent = name + ": loading…";
  $("detail").classList.remove("hidden");
  renderSwap();
  loadDetail();
  detail.timer = setInterval(loadDetail, DETAIL_EVERY_MS);
}

function closeDetail() {
  if (detail.timer) clearInterval(detail.timer);
  detail = { name: null, timer: null };
  $("detail").classList.add("hidden");
  $("detail-orders").innerHTML = "";
  $("detail-trades").innerHTML = "";
  $("detail-swap").innerHTML = "";
  $("detail-swap").classList.add("hidden");
}

function connect() {
  if (source) source.close();
  // EventSource cannot send headers: this one route takes the token in the query.
  source = new EventSource("/api/stream?token=" + encodeURIComponent(token));
  source.addEventListener("strategies", (m) => {
    window.polybotStream.strategies += 1;
    views = JSON.parse(m.data);
    render();
    if (detail.name) renderSwap();
    showError("");
  });
  source.addEventListener("events", (m) => {
    window.polybotStream.events += 1;
    renderEvents(JSON.parse(m.data));
  });
  source.addEventListener("error", (m) => {
    window.polybotStream.errors += 1;
    if (m.data) { showError("store: " + JSON.parse(m.data).error); return; }
    showError("stream interrupted; reconnecting…");
    // A refused token closes the stream for good: find out with one request.
    if (source && source.readyState === EventSource.CLOSED) {
      api("GET", "/api/strategies").then(() => setTimeout(connect, 1000)).catch(() => {});
    }
  });
}

function start() {
  $("login").classList.add("hidden");
  $("main").classList.remove("hidden");
  connect();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("polybot-token", token);
  start();
});
$("logout").addEventListener("click", forget);
$("halt").addEventListener("click", async () => {
  if (!confirm("Halt placement of every strategy?")) return;
  try { await api("POST", "/api/halt"); } catch (e) { showError(e.message); }
});
$("filter").addEventListener("input", () => { page = 0; render(); });
$("prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
$("next").addEventListener("click", () => { page += 1; render(); });
$("detail-close").addEventListener("click", closeDetail);

// A token in the URL's fragment (#token=…) is taken once and removed from
// the address bar, for opening the page from a script.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  token = fragment.get("token");
  sessionStorage.setItem("polybot-token", token);
  window.history.replaceState(null, "", location.pathname);
}
if (token) start(); else askToken();
