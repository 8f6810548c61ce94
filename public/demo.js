// The demo page: one room through the SDK (/client/herald.js), nothing
// hand-written on the socket. Under scripts/dev the server hands out demo
// tokens (GET /v1/demo/token, loopback only), so the page joins and can
// publish on first load; elsewhere it asks for a token.

import { room } from "/client/herald.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const roomName = params.get("room") || "demo:lobby";
const region = params.get("region") || undefined;
const HISTORY_ON_LOAD = 50;
const LATENCY_WINDOW = 50;

// ------------------------------------------------------------- tokens --

/** A demo token from the dev server, or null where there is none (production). */
async function demoToken(name) {
  const res = await fetch(`/v1/demo/token?name=${encodeURIComponent(name)}`, { cache: "no-store" });
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`demo token: HTTP ${res.status}`);
  return res.json();
}

/** A token pasted by the user (kept for this tab), asked for once. */
function askForToken() {
  const saved = sessionStorage.getItem("herald-token");
  if (saved) return Promise.resolve(saved);
  const dialog = $("token-dialog");
  $("token-room").value = roomName;
  dialog.showModal();
  return new Promise((resolve) => {
    $("token-form").addEventListener("submit", () => {
      const room = $("token-room").value.trim();
      const token = $("token-value").value.trim();
      sessionStorage.setItem("herald-token", token);
      if (room && room !== roomName) {
        location.search = `?room=${encodeURIComponent(room)}`;
        return;
      }
      resolve(token);
    }, { once: true });
  });
}

let myName = localStorage.getItem("herald-name") || "";
let me = null; // our user id (the token's sub)

async function getToken() {
  const demo = await demoToken(myName);
  if (demo) {
    me = demo.sub;
    return demo.token;
  }
  const token = await askForToken();
  try {
    me = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub;
  } catch {
    me = null;
  }
  return token;
}

// --------------------------------------------------------------- room --

$("room-name").textContent = roomName;
$("share").href = `${location.pathname}?room=${encodeURIComponent(roomName)}`;
$("name-input").value = myName;

const chat = room("", roomName, { getToken, presence: "events", region, cap: 5_000 });
window.heraldRoom = chat; // for the console (and the browser test)

const seen = new Set(); // mids already rendered (history and live overlap)
let loadedHistory = false;

chat.on("state", ({ state, reason }) => {
  const pill = $("state");
  pill.dataset.state = state;
  pill.textContent = state;
  pill.title = reason ? `${reason.code}: ${reason.message}` : "";
  const open = state === "open";
  $("chat-input").disabled = $("send").disabled = state === "closed";
  if (open) {
    $("where").textContent = `${chat.region} · ${chat.conn}`;
    if (!loadedHistory) {
      loadedHistory = true;
      loadRecent();
    }
  } else if (state === "reconnecting") {
    $("where").textContent = reason?.retryIn !== undefined ? `retrying in ${(reason.retryIn / 1000).toFixed(1)} s` : "resuming…";
  } else if (state === "closed") {
    $("where").textContent = reason?.message ?? "";
  }
});

chat.on("message", (m) => {
  const d = m.data ?? {};
  if (d.kind === "cursor") return showCursor(m.from, d);
  if (d.kind === "typing") return showTyping(m.from, d.name);
  addMessage(m);
});

chat.on("reset", async ({ reason }) => {
  $("feed").replaceChildren();
  seen.clear();
  system(reason === "erased" ? "The room's history was erased." : "Some messages expired while you were away; reloaded.");
  await loadRecent();
});

chat.on("presence", renderPresence);
chat.on("error", (e) => console.warn("herald:", e.code, e.message));

/** The last messages before we joined, above the live ones. */
async function loadRecent() {
  const at = chat.position?.seq ?? 0;
  try {
    const page = await chat.history({ since: Math.max(0, at - HISTORY_ON_LOAD), limit: HISTORY_ON_LOAD });
    const feed = $("feed");
    const first = feed.firstChild;
    for (const m of page.messages) {
      if (m.seq > at) continue; // live delivery has it
      const li = renderMessage(m);
      if (li) feed.insertBefore(li, first);
    }
    $("feed-note").textContent = `seq ${chat.position?.seq ?? 0}`;
    scrollDown();
  } catch (e) {
    system(`Could not load history: ${e.message}`);
  }
}

// ------------------------------------------------------------- feed --

function colorOf(user) {
  let h = 0;
  for (const c of String(user)) h = (h * 31 + c.codePointAt(0)) % 360;
  return `hsl(${h} 70% 68%)`;
}

function renderMessage(m) {
  const d = m.data ?? {};
  if (m.mid && seen.has(m.mid)) return null;
  if (m.mid) seen.add(m.mid);
  const li = document.createElement("li");
  li.dataset.seq = m.seq;
  if (m.from && m.from === me) li.classList.add("mine");
  const name = d.name || m.from || "anonymous";
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  avatar.style.background = colorOf(m.from ?? name);
  avatar.textContent = name.slice(0, 1).toUpperCase();
  const body = document.createElement("div");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = name;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = typeof d.text === "string" ? d.text : JSON.stringify(m.data);
  body.append(who, text);
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  li.append(avatar, body, meta);
  return li;
}

function addMessage(m) {
  const li = renderMessage(m);
  if (!li) return;
  const d = m.data ?? {};
  if (typeof d.sent === "number") {
    const ms = Date.now() - d.sent;
    li.querySelector(".meta").textContent += ` · ${ms} ms`;
    if (m.from === me) recordLatency(ms);
  }
  $("feed").append(li);
  $("feed-note").textContent = `seq ${m.seq}`;
  scrollDown();
}

function system(text) {
  const li = document.createElement("li");
  li.className = "system";
  li.textContent = text;
  $("feed").append(li);
  scrollDown();
}

function scrollDown() {
  const feed = $("feed");
  feed.scrollTop = feed.scrollHeight;
}

$("chat").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  try {
    await chat.publish({ kind: "chat", text, name: myName || me, sent: Date.now() });
  } catch (e) {
    system(`Not sent (${e.code}): ${e.message}`);
  }
});

// --------------------------------------------------- typing and cursors --

let lastTyping = 0;
$("chat-input").addEventListener("input", () => {
  if (Date.now() - lastTyping < 2_000 || chat.state !== "open") return;
  lastTyping = Date.now();
  chat.publish({ kind: "typing", name: myName || me }, { ephemeral: true }).catch(() => {});
});

const typing = new Map();
function showTyping(from, name) {
  if (from === me) return;
  clearTimeout(typing.get(from)?.timer);
  typing.set(from, { name: name || from, timer: setTimeout(() => { typing.delete(from); renderTyping(); }, 3_000) });
  renderTyping();
}
function renderTyping() {
  const names = [...typing.values()].map((t) => t.name);
  $("typing").textContent = names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}

let lastCursor = 0;
let cursorTimer = null;
function sendCursor(ev) {
  const strip = $("cursor-strip").getBoundingClientRect();
  const x = Math.min(1, Math.max(0, (ev.clientX - strip.left) / strip.width));
  const y = Math.min(1, Math.max(0, (ev.clientY - strip.top) / strip.height));
  const send = () => {
    lastCursor = Date.now();
    if (chat.state === "open") chat.publish({ kind: "cursor", x, y, name: myName || me }, { ephemeral: true }).catch(() => {});
  };
  // At most 8 a second: the room allows 20 publishes a second per connection.
  clearTimeout(cursorTimer);
  const wait = 125 - (Date.now() - lastCursor);
  if (wait <= 0) send();
  else cursorTimer = setTimeout(send, wait);
}
$("cursor-strip").addEventListener("pointermove", sendCursor);

const cursors = new Map();
function showCursor(from, d) {
  const strip = $("cursor-strip");
  let c = cursors.get(from);
  if (!c) {
    c = document.createElement("span");
    c.className = "cursor";
    c.style.color = colorOf(from);
    strip.append(c);
    cursors.set(from, c);
  }
  c.textContent = from === me ? "you" : d.name || from;
  c.style.left = `${(d.x * 100).toFixed(1)}%`;
  c.style.top = `${(d.y * 70).toFixed(1)}%`;
  clearTimeout(c.hide);
  c.hide = setTimeout(() => { c.remove(); cursors.delete(from); }, 4_000);
  strip.querySelector(".hint")?.remove();
}

// ------------------------------------------------------------ presence --

function renderPresence(p) {
  $("presence-count").textContent = p.count;
  const regions = Object.entries(p.regions).sort((a, b) => b[1] - a[1]);
  $("regions").replaceChildren(...regions.map(([name, n]) => {
    const li = document.createElement("li");
    li.dataset.region = name;
    const label = document.createElement("span");
    label.textContent = name;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${p.count ? (100 * n) / p.count : 0}%`;
    bar.append(fill);
    const count = document.createElement("span");
    count.textContent = n;
    li.append(label, bar, count);
    return li;
  }));
  $("members").replaceChildren(...p.members.slice(0, 40).map((m) => {
    const li = document.createElement("li");
    li.textContent = (m.info && m.info.name) || m.user;
    if (m.user === me) li.textContent += " (you)";
    li.style.borderColor = colorOf(m.user);
    return li;
  }));
}

// ------------------------------------------------------------- latency --

const latencies = [];
function recordLatency(ms) {
  latencies.push(ms);
  if (latencies.length > LATENCY_WINDOW) latencies.shift();
  const sorted = [...latencies].sort((a, b) => a - b);
  $("latency-p50").textContent = sorted[Math.floor(sorted.length / 2)];
  $("latency-last").textContent = ms;
  $("latency-n").textContent = latencies.length;
  const max = Math.max(...latencies, 1);
  const pts = latencies.map((v, i) => `${latencies.length === 1 ? 0 : (200 * i) / (latencies.length - 1)},${38 - (36 * v) / max}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.join(" "));
  $("latency-spark").replaceChildren(line);
}

// ---------------------------------------------------------------- name --

$("profile").addEventListener("submit", (ev) => ev.preventDefault());
$("name-input").addEventListener("change", () => {
  myName = $("name-input").value.trim().slice(0, 32);
  localStorage.setItem("herald-name", myName);
});
