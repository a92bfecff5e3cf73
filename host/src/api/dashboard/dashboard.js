// polybot dashboard: polls /api/strategies every second with the tab's token,
// keeps a short PnL history per strategy and draws it on a canvas by hand.
"use strict";
const HISTORY = 120;
const history = new Map(); // name -> [pnl, ...]
const rows = new Map(); // name -> {tr, cells, canvas}
let token = sessionStorage.getItem("polybot-token");
let timer = null;

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

async function api(method, path) {
  const r = await fetch(path, { method, headers: { Authorization: "Bearer " + token } });
  if (r.status === 401) {
    sessionStorage.removeItem("polybot-token");
    token = null;
    askToken();
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
  for (const key of ["name", "state", "restarts", "events", "orders", "fills", "pnl", "chart", "last", "ckpt", "act"]) {
    const td = document.createElement("td");
    if (key === "name" || key === "state") td.className = key;
    tr.appendChild(td);
    cells[key] = td;
  }
  cells.name.textContent = name;
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

function render(views) {
  const seen = new Set();
  const counts = {};
  const filter = $("filter").value.trim().toLowerCase();
  for (const v of views) {
    seen.add(v.name);
    counts[v.state] = (counts[v.state] || 0) + 1;
    const h = history.get(v.name) || [];
    h.push(v.pnl);
    if (h.length > HISTORY) h.shift();
    history.set(v.name, h);
    const r = row(v.name);
    r.tr.classList.toggle("hidden", filter !== "" && !v.name.toLowerCase().includes(filter));
    r.cells.state.innerHTML = "";
    const badge = document.createElement("span");
    badge.className = "s-" + v.state;
    badge.textContent = v.state;
    if (v.last_fault) badge.title = v.last_fault;
    r.cells.state.appendChild(badge);
    r.cells.restarts.textContent = v.restarts;
    r.cells.events.textContent = v.last_seq;
    r.cells.orders.textContent = v.orders;
    r.cells.fills.textContent = v.fills;
    r.cells.pnl.textContent = (v.pnl >= 0 ? "+" : "") + v.pnl.toFixed(2);
    r.cells.pnl.className = v.pnl >= 0 ? "pos" : "neg";
    r.cells.last.textContent = age(v.last_handled_age_ms);
    r.cells.ckpt.textContent = "#" + v.last_checkpoint_seq + " · " + age(v.checkpoint_age_ms);
    const paused = v.state === "paused";
    r.button.dataset.action = paused ? "resume" : "pause";
    r.button.textContent = paused ? "resume" : "pause";
    if (!r.tr.classList.contains("hidden")) draw(r.canvas, h);
  }
  for (const [name, r] of rows) {
    if (!seen.has(name)) { r.tr.remove(); rows.delete(name); history.delete(name); }
  }
  const parts = Object.entries(counts).map(([s, n]) => n + " " + s);
  $("summary").textContent = views.length + " strategies: " + parts.join(", ") +
    " · updated " + new Date().toLocaleTimeString();
}

async function tick() {
  try {
    const body = await api("GET", "/api/strategies");
    render(body.strategies);
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

function start() {
  $("login").classList.add("hidden");
  $("main").classList.remove("hidden");
  if (timer) clearInterval(timer);
  tick();
  timer = setInterval(tick, 1000);
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("polybot-token", token);
  start();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem("polybot-token");
  token = null;
  if (timer) clearInterval(timer);
  askToken();
});
$("halt").addEventListener("click", async () => {
  if (!confirm("Pause every strategy?")) return;
  try { await api("POST", "/api/halt"); } catch (e) { showError(e.message); }
});
$("filter").addEventListener("input", tick);

// A token in the URL's fragment (#token=…) is taken once and removed from
// the address bar, for opening the page from a script.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  token = fragment.get("token");
  sessionStorage.setItem("polybot-token", token);
  window.history.replaceState(null, "", location.pathname);
}
if (token) start(); else askToken();
