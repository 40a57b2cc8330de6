// The session page: the list of the user's sessions, and for one session its lanes (counted
// by axiomd over the whole session), its timeline (read a page at a time, growing while the
// agent runs), its process tree and its terminal replayed. Every text from an event is put on
// the page as text (textContent), never as markup.
"use strict";

const LANES = ["turns", "commands", "files", "network", "violations", "interventions"];
const LANE_NAMES = {
  turns: "turns & tools", commands: "commands", files: "files", network: "connections",
  violations: "violations", interventions: "interventions", session: "session",
};
const PAGE = 1000;
// Entries read on their own when a session opens; beyond, a page at each scroll to the end.
const AUTO_MAX = 20000;

const token = (() => {
  const m = /(?:^#|&)token=([0-9a-f]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("axiom-token", m[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("axiom-token") || "";
})();

const $ = (id) => document.getElementById(id);
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r.json();
}

function status(text) { $("status").textContent = text; }

const ms = (ns) => ns / 1e6;
function clock(ns) { return new Date(ms(ns)).toLocaleString(); }
function span(ns) {
  if (ns < 1e9) return Math.max(1, Math.round(ns / 1e6)) + " ms";
  const s = Math.round(ns / 1e9);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function offset(ns) { return "+" + (ns / 1e9).toFixed(3) + " s"; }

// ---- the list of sessions ----

let sessions = [];
let current = null; // the session shown

async function loadSessions() {
  const r = await api("/api/sessions");
  sessions = r.sessions;
  $("who").textContent = "sessions of uid " + r.uid;
  const body = $("session-list").tBodies[0];
  body.replaceChildren();
  const now = Date.now() * 1e6;
  for (const s of sessions) {
    const end = s.ended_ns || (s.state === "exited" ? s.started_ns : now);
    const row = el("tr", { "data-agent": s.id },
      el("td", {}, (s.name || s.command.join(" ") || "agent") + " #" + s.id),
      el("td", {}, s.kind),
      el("td", {}, s.user),
      el("td", {}, s.workspace || ""),
      el("td", {}, clock(s.started_ns)),
      el("td", {}, span(end - s.started_ns)),
      el("td", { class: "state-" + s.state }, s.state + (s.exit_code != null ? " (" + s.exit_code + ")" : "")),
      el("td", { class: "num" + (s.violations ? " bad" : "") }, s.violations),
      el("td", { class: "num" }, s.interventions),
      el("td", { class: "num" }, s.undelivered ? s.delivered + " (" + s.undelivered + " not)" : s.delivered));
    if (current && current.id === s.id) row.classList.add("selected");
    row.addEventListener("click", () => open(s.id));
    body.append(row);
  }
  $("no-sessions").hidden = sessions.length > 0;
  return sessions;
}

// ---- one session ----

function resetSession(s) {
  current = { id: s.id, info: s, cursor: null, seen: new Set(), procs: new Map(), lastWrite: null, unrenamed: new Map(), done: false, kept: [], gen: 0 };
  $("session").hidden = false;
  $("session-title").textContent = (s.name || s.command.join(" ")) + " — agent " + s.id;
  $("session-meta").textContent = [
    s.kind, "user " + s.user, s.workspace, s.profile && "profile " + s.profile,
    s.model && "model " + s.model, s.conversation && "conversation " + s.conversation,
    "started " + clock(s.started_ns),
  ].filter(Boolean).join(" · ");
  $("timeline").replaceChildren();
  $("tree").replaceChildren();
  $("screen").textContent = "";
  $("cast").href = "#";
  for (const r of $("session-list").tBodies[0].rows) r.classList.toggle("selected", r.dataset.agent == s.id);
}

async function open(id) {
  const s = sessions.find((x) => x.id === id);
  if (!s) return;
  resetSession(s);
  status("loading agent " + id + "…");
  // Marks for `cargo xtask bench ui`: the first entries on screen, then every panel drawn
  // (the lanes over the whole session, the first page, the process tree, the terminal).
  const first = loadEvents().then(() => performance.mark("axiom:first-rows"));
  await Promise.all([first, loadSummary(), loadTerminal()]);
  performance.mark("axiom:timeline");
  status("");
}

function laneOf(e) {
  switch (e.kind) {
    case "hook": return "turns";
    case "exec": case "exit": return "commands";
    case "output": return isFile(e.target) ? "files" : null;
    case "file": return "files";
    case "connect": return "network";
    case "violation": case "denied": return "violations";
    case "intervention": return "interventions";
    default: return "session";
  }
}
function isFile(t) { return !!t && t.startsWith("/") && !t.startsWith("/dev/"); }

function describe(e) {
  switch (e.kind) {
    case "hook": {
      const what = e.tool ? e.event + " " + e.tool : e.event;
      return [what + (e.path ? " " + e.path : "") + (e.text ? ": " + e.text : "") + (e.refused ? "  (refused by " + e.refused + ")" : "")];
    }
    case "exec": return ["$ " + (e.argv.length ? e.argv.join(" ") : e.filename) + "  (pid " + e.tgid + ")"];
    case "file": return [e.op + " " + e.path + (e.path2 ? " → " + e.path2 : "")];
    case "connect": return ["connect " + e.address + ":" + e.port + " (" + e.comm + ")"];
    case "violation": return [e.rule + " [" + e.severity + ", " + e.action + "]" + (e.path ? " " + e.path : "") + ": " + e.detail];
    case "denied": return ["denied " + e.op + " " + e.target + " by " + e.by + (e.count > 1 ? " ×" + e.count : "")];
    case "intervention": {
      const parts = [e.action + (e.channel ? " by " + e.channel : "") + (e.rule ? " for " + e.rule : "")];
      const lat = (e.detect_us || 0) + (e.act_us || 0);
      if (lat) parts.push(" in " + (lat / 1000).toFixed(0) + " ms");
      parts.push(e.detail ? ": " + e.detail : "");
      const mark = e.delivered == null ? null
        : el("span", { class: e.delivered ? "delivered" : "undelivered" }, e.delivered ? "  ✓ delivered" : "  ✗ not delivered");
      return mark ? [parts.join(""), mark] : [parts.join("")];
    }
    case "agent_started": return ["started: " + e.command.join(" ")];
    case "agent_exited": return ["exited" + (e.code != null ? " with " + e.code : "") + (e.signal ? " by signal " + e.signal : "")];
    case "hooks_inactive": return ["hooks not running: " + e.reason];
    default: return [e.kind];
  }
}

function addEvent(e) {
  const key = e.seq + ":" + e.time_ns;
  if (current.seen.has(key)) return;
  current.seen.add(key);
  const t0 = current.info.started_ns;
  if (e.kind === "exec") {
    current.procs.set(e.tgid, { e, code: undefined, children: [] });
  }
  if (e.kind === "exit") {
    const p = current.procs.get(e.tgid);
    if (p && e.pid === e.tgid) {
      p.code = e.code != null ? e.code : "signal " + e.signal;
      if (p.row) p.row.querySelector(".what").append(el("span", { class: p.code === 0 ? "delivered" : "undelivered" }, "  → exit " + p.code));
    }
    return;
  }
  const lane = laneOf(e);
  if (!lane) return;
  // An atomic write (a temporary file written, then renamed over the file) is one write of
  // the file it became.
  if (e.kind === "file" && e.op === "rename" && e.path2) {
    // The write it completes, however many entries came between them.
    const key = e.tgid + ":" + e.path;
    const w = current.unrenamed.get(key);
    if (w) {
      current.unrenamed.delete(key);
      w.target = e.path2;
      w.via = e.path;
      w.row.dataset.path = e.path2;
      w.row.querySelector(".what").textContent = "wrote " + e.path2 + " (" + w.bytes + " bytes, through " + e.path + ")";
      return;
    }
  }
  // Consecutive writes of one process to one file are one row: the content as it was written.
  if (e.kind === "output") {
    const w = current.lastWrite;
    if (w && !w.via && w.target === e.target && w.tgid === e.tgid && w.row === $("timeline").lastElementChild) {
      w.text += e.text;
      w.bytes += e.count;
      w.row.querySelector(".what").textContent = "wrote " + e.target + " (" + w.bytes + " bytes)";
      return;
    }
    const row = el("li", { class: "clickable", "data-lane": lane, "data-kind": "write", "data-path": e.target },
      el("span", { class: "t" }, offset(e.time_ns - t0)), el("span", { class: "lane" }, "files"),
      el("span", { class: "what" }, "wrote " + e.target + " (" + e.count + " bytes)"));
    const w2 = { target: e.target, tgid: e.tgid, text: e.text, bytes: e.count, row };
    row.addEventListener("click", () => showContent(w2.target, w2.text, w2.bytes));
    current.lastWrite = w2;
    current.unrenamed.set(e.tgid + ":" + e.target, w2);
    // The last few hundred writes may still be renamed; older ones are let go.
    if (current.unrenamed.size > 512) current.unrenamed.delete(current.unrenamed.keys().next().value);
    $("timeline").append(row);
    return;
  }
  const attrs = { "data-lane": lane, "data-kind": e.kind };
  if (e.kind === "intervention" && e.delivered != null) attrs["data-delivered"] = String(e.delivered);
  if (e.kind === "violation") attrs["data-rule"] = e.rule;
  if (e.kind === "hook" && e.tool) attrs["data-tool"] = e.tool;
  const row = el("li", attrs, el("span", { class: "t" }, offset(e.time_ns - t0)),
    el("span", { class: "lane" }, LANE_NAMES[lane]), el("span", { class: "what" }, ...describe(e)));
  if (e.kind === "exec") current.procs.get(e.tgid).row = row;
  $("timeline").append(row);
}

function showContent(path, text, bytes) {
  $("content-title").textContent = path + " — " + bytes + " bytes as written (secrets masked)";
  $("content-text").textContent = text || "(not text: nothing to show)";
  $("content").showModal();
}

async function loadEvents() {
  const s = current;
  const since = s.cursor == null ? s.info.started_ns : s.cursor;
  const r = await api("/api/events?agent=" + s.id + "&since_ns=" + since + "&limit=" + PAGE);
  if (s !== current) return;
  for (const e of r.events) addEvent(e);
  const last = r.events[r.events.length - 1];
  if (last) s.cursor = last.time_ns;
  // A full page means there is more to read now; a short one that the store is read up to here.
  s.more = r.events.length >= PAGE;
  $("more").hidden = !s.more;
  s.read = (s.read || 0) + r.events.length;
  $("timeline-note").textContent = $("timeline").children.length + " entries" + (s.more ? ", more to load" : "");
  drawTree();
  // The rest of the first entries read in the background: the page is usable meanwhile.
  if (s.more && s.read < AUTO_MAX) setTimeout(() => loadEvents().catch((e) => status(e.message)), 0);
}

function drawTree() {
  const procs = current.procs;
  const roots = [];
  for (const p of procs.values()) p.children = [];
  for (const p of procs.values()) {
    const parent = procs.get(p.e.ppid);
    if (parent && parent !== p) parent.children.push(p); else roots.push(p);
  }
  const render = (p) => {
    const code = p.code === undefined ? "" : "  → exit " + p.code;
    const li = el("li", {}, el("span", { class: p.code === undefined ? "" : p.code === 0 ? "code-0" : "code-bad" },
      (p.e.argv.length ? p.e.argv.join(" ") : p.e.filename) + "  [" + p.e.tgid + "]" + code));
    if (p.children.length) li.append(el("ul", {}, ...p.children.map(render)));
    return li;
  };
  $("tree").replaceChildren(el("ul", {}, ...roots.map(render)));
}

async function loadSummary() {
  const s = current;
  const r = await api("/api/summary?agent=" + s.id);
  if (s !== current) return;
  const c = $("lanes");
  const g = c.getContext("2d");
  const W = c.width, H = c.height, left = 110, rowH = (H - 10) / LANES.length;
  g.clearRect(0, 0, W, H);
  const n = Math.max(1, Math.ceil((r.end_ns - r.start_ns) / r.bucket_ns));
  const bw = (W - left - 5) / n;
  const css = getComputedStyle(document.documentElement);
  const per = new Map(); // lane -> bucket -> count
  let total = 0;
  for (const x of r.counts) {
    const lane = x.kind === "output" ? "files" : laneOf({ kind: x.kind, target: "/" });
    if (!LANES.includes(lane)) continue;
    const b = Math.floor((x.bucket_ns - r.start_ns) / r.bucket_ns);
    const m = per.get(lane) || new Map();
    m.set(b, (m.get(b) || 0) + x.n);
    per.set(lane, m);
    total += x.n;
  }
  LANES.forEach((lane, i) => {
    const y = 5 + i * rowH;
    g.fillStyle = "#57606a";
    g.font = "12px system-ui";
    g.fillText(LANE_NAMES[lane], 4, y + rowH * 0.65);
    g.fillStyle = css.getPropertyValue("--" + lane).trim() || "#333";
    const m = per.get(lane) || new Map();
    const max = Math.max(1, ...m.values());
    for (const [b, k] of m) {
      const h = Math.max(2, (Math.log1p(k) / Math.log1p(max)) * (rowH - 4));
      g.fillRect(left + b * bw, y + rowH - 2 - h, Math.max(1.5, bw - 0.5), h);
    }
  });
  $("lanes-note").textContent = total + " events in " + span(r.end_ns - r.start_ns) + ", one column per " + span(r.bucket_ns);
}

let frames = [];
let playing = null;
// The replay is read on from the screens already here; a replay thinned out on the server
// (a new generation) is read again from its start.
async function loadTerminal() {
  const s = current;
  let r = await api("/api/terminal?agent=" + s.id + "&from=" + s.kept.length);
  if (s !== current) return;
  if (r.generation !== s.gen && s.kept.length) {
    s.kept = [];
    r = await api("/api/terminal?agent=" + s.id + "&from=0");
    if (s !== current) return;
  }
  s.gen = r.generation;
  s.kept = s.kept.concat(r.frames);
  const atEnd = +$("scrub").value >= frames.length - 1;
  frames = r.now ? s.kept.concat([r.now]) : s.kept.slice();
  $("terminal-note").textContent = r.device
    ? r.device + ", " + r.rows + "×" + r.cols + ", " + frames.length + " screens"
    : "it wrote to no terminal";
  $("scrub").max = Math.max(0, frames.length - 1);
  if (atEnd || !playing) showFrame(frames.length - 1);
}

function showFrame(i) {
  if (!frames.length) { $("screen").textContent = ""; return; }
  i = Math.max(0, Math.min(frames.length - 1, i));
  $("scrub").value = i;
  $("screen").textContent = frames[i].screen;
  $("frame-time").textContent = offset(frames[i].time_ns - current.info.started_ns);
}

async function downloadCast(ev) {
  ev.preventDefault();
  const r = await fetch("/api/asciicast?agent=" + current.id, { headers: { Authorization: "Bearer " + token } });
  if (!r.ok) { status("asciicast: " + r.status); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = el("a", { href: url, download: "agent-" + current.id + ".cast" });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function play() {
  if (playing) { clearInterval(playing); playing = null; $("play").textContent = "Play"; return; }
  let i = +$("scrub").value >= frames.length - 1 ? 0 : +$("scrub").value;
  $("play").textContent = "Pause";
  playing = setInterval(() => {
    showFrame(i++);
    if (i >= frames.length) play();
  }, 250);
}

// ---- live ----

// Every two seconds: a running session's new events; its replay every four, its lanes every
// ten; the list every four, or every ten while a session is open. Each asks axiomd only for
// what came since (the lanes and the list's counts excepted).
let ticks = 0;
async function tick() {
  ticks++;
  try {
    if (ticks % (current ? 5 : 2) === 0 || !sessions.length) await loadSessions();
    if (current) {
      const s = sessions.find((x) => x.id === current.id);
      if (s) current.info = Object.assign(current.info, s);
      const live = s && s.state !== "exited";
      if (live || !current.done) {
        await loadEvents();
        if (!current.more && !live) current.done = true;
        const more = [];
        if (live && ticks % 2 === 0) more.push(loadTerminal());
        if (live && ticks % 5 === 0) more.push(loadSummary());
        await Promise.all(more);
      }
    }
    status("");
  } catch (err) {
    status(String(err.message || err));
  }
}

// The legend's lanes are switches: a click hides or shows that lane's entries.
function legend() {
  $("legend").replaceChildren(...LANES.map((l) => {
    const b = el("button", { type: "button", "data-lane": l, title: "show or hide " + LANE_NAMES[l] }, LANE_NAMES[l]);
    b.addEventListener("click", () => {
      b.classList.toggle("off", $("timeline").classList.toggle("hide-" + l));
    });
    return b;
  }));
}

window.addEventListener("DOMContentLoaded", async () => {
  legend();
  $("more").addEventListener("click", () => loadEvents().catch((e) => status(e.message)));
  $("timeline").addEventListener("scroll", (ev) => {
    const t = ev.target;
    if (current && current.more && t.scrollTop + t.clientHeight >= t.scrollHeight - 40) loadEvents().catch((e) => status(e.message));
  });
  $("scrub").addEventListener("input", (ev) => showFrame(+ev.target.value));
  $("play").addEventListener("click", play);
  $("cast").addEventListener("click", downloadCast);
  if (!token) { status("open the address axiomctl ui printed: it carries the page's token"); return; }
  try {
    await loadSessions();
    const m = /[?&]agent=(\d+)/.exec(location.search);
    if (m) await open(+m[1]);
    document.body.dataset.ready = "true";
  } catch (err) {
    status(String(err.message || err));
  }
  setInterval(tick, 2000);
});
