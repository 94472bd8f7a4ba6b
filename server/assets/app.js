// Cathedral's dashboard: views over the REST API (/v1), kept live by the event stream
// (/v1/events). Plain JavaScript, no library, no build step: served from the binary.
"use strict";

const STATES = ["JOB_STATE_PENDING", "JOB_STATE_ASSIGNED", "JOB_STATE_RUNNING",
  "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_TIMED_OUT"];
const view = document.getElementById("view");
const live = document.getElementById("live");
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("cathedral-token") || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("cathedral-token", tokenInput.value);
  connectEvents();
  route();
});

function headers() {
  const h = { "content-type": "application/json" };
  if (tokenInput.value) h["authorization"] = "Bearer " + tokenInput.value;
  return h;
}

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: headers() });
  const text = await r.text();
  const body = text ? JSON.parse(text) : {};
  if (!r.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : r.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : String(c ?? ""));
  return e;
}

const stateName = (s) => (s || "JOB_STATE_UNSPECIFIED").replace("JOB_STATE_", "").toLowerCase();
const stateBadge = (s) => el("span", { class: "state s-" + stateName(s), "data-state": stateName(s) }, stateName(s));
const time = (ms) => (ms ? new Date(Number(ms)).toISOString().replace("T", " ").replace("Z", "") : "");

// Why an attempt was stopped, when it was: the outcome (timeout, lost) or the note the
// worker appends to the output's tail (cancelled, memory limit).
function killReason(o) {
  if (!o) return "";
  if (o.timed_out) return "killed: timeout";
  if (o.lost) return "lost with its node";
  let tail = "";
  try { tail = atob(o.output_tail || ""); } catch (_) {}
  const note = /\[cathedral: ([^\]]+)\]/.exec(tail);
  if (!note) return "";
  return note[1].startsWith("killed by ") ? "killed: " + note[1].slice(10) : "killed: " + note[1];
}

function outcomeText(o) {
  if (!o) return "";
  let what = o.code !== undefined ? `exit ${o.code}` : o.signal !== undefined ? `signal ${o.signal}`
    : o.timed_out ? "timed out" : o.lost ? "lost" : "exit 0";
  return `${what} after ${Number(o.duration_ms || 0)} ms`;
}

// ---- the event stream: fetch + a small SSE reader (EventSource cannot send a token) ----

let listeners = [];
let stream = null;
function onEvent(f) { listeners.push(f); }

async function connectEvents() {
  if (stream) stream.abort();
  const ctl = new AbortController();
  stream = ctl;
  let last = null;
  for (;;) {
    try {
      const h = headers();
      if (last) h["last-event-id"] = last;
      const r = await fetch("/v1/events", { headers: h, signal: ctl.signal });
      if (!r.ok) throw new Error("events: HTTP " + r.status);
      live.textContent = "live";
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let at;
        while ((at = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, at);
          buf = buf.slice(at + 2);
          let id = null, data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!data) continue;
          if (id) last = id;
          const e = JSON.parse(data);
          live.textContent = `live · index ${e.index}`;
          for (const f of listeners) f(e);
        }
      }
    } catch (err) {
      if (ctl.signal.aborted) return;
      live.textContent = "reconnecting…";
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ---- views ----

let current = null; // { render, onEvent }

async function clusterView() {
  const [st, nodes] = await Promise.all([api("/v1/cluster"), api("/v1/nodes")]);
  const byId = new Map((nodes.nodes || []).map((n) => [n.id, n]));
  const rows = (st.members || []).map((m) => {
    const n = byId.get(m.id) || {};
    return el("tr", { "data-node": m.id },
      el("td", {}, m.id, m.id === st.leader_id ? el("strong", { class: "leader" }, " (leader)") : ""),
      el("td", {}, m.address), el("td", {}, `${n.role || ""} ${m.role}`),
      el("td", {}, `${n.state || ""} / ${n.gossip_state || ""}`),
      el("td", { class: "wide" }, n.phi !== undefined ? Number(n.phi).toFixed(2) : ""),
      el("td", { class: "wide" }, `${n.running || 0} / ${n.slots || 0}`),
      el("td", { class: "wide" }, Object.entries(n.tags || {}).map(([k, v]) => `${k}=${v}`).join(" ")));
  });
  const counts = st.jobs_by_state || {};
  view.replaceChildren(
    el("h2", {}, "Cluster"),
    el("div", { class: "facts", id: "cluster-facts" },
      el("div", {}, el("span", {}, "leader"), el("b", { id: "leader" }, st.leader_id || "none")),
      el("div", {}, el("span", {}, "term"), st.term),
      el("div", {}, el("span", {}, "commit"), st.commit_index),
      el("div", {}, el("span", {}, "applied"), st.applied_index),
      el("div", {}, el("span", {}, "this node"), `${st.node_id} (${st.server_state})`),
      el("div", {}, el("span", {}, "state hash"), (st.state_hash || "").slice(0, 16)),
      el("div", {}, el("span", {}, "gossip"), `${nodes.health || ""} (${nodes.alive || 0} of ${nodes.known || 0} alive)`)),
    el("h2", {}, "Members"),
    el("table", { id: "members", "aria-label": "Members" },
      el("thead", {}, el("tr", {}, ["id", "address", "role", "state / gossip"].map((h) => el("th", {}, h)),
        ["phi", "running / slots", "tags"].map((h) => el("th", { class: "wide" }, h)))),
      el("tbody", {}, rows)),
    el("h2", {}, "Jobs"),
    countsBar(counts));
}

function countsBar(counts) {
  return el("div", { class: "counts", id: "counts", "aria-label": "Jobs by state" },
    STATES.map((s) => el("a", { href: `#/jobs?state=${s}`, "data-state": stateName(s) },
      `${stateName(s)} `, el("b", { class: "count" }, counts[stateName(s)] || 0))));
}

async function jobsView(params) {
  const q = new URLSearchParams({ page_size: "50" });
  if (params.get("state")) q.set("state", params.get("state"));
  if (params.get("name")) q.set("name_prefix", params.get("name"));
  if (params.get("page")) q.set("page_token", params.get("page"));
  const [list, st] = await Promise.all([api("/v1/jobs?" + q), api("/v1/cluster")]);
  const filters = el("form", { class: "filters", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const p = new URLSearchParams();
    if (f.get("state")) p.set("state", f.get("state"));
    if (f.get("name")) p.set("name", f.get("name"));
    location.hash = "#/jobs?" + p;
  } },
    el("label", {}, "State ", el("select", { name: "state", "aria-label": "State" },
      el("option", { value: "" }, "any"),
      STATES.map((s) => el("option", s === params.get("state") ? { value: s, selected: "" } : { value: s }, stateName(s))))),
    el("label", {}, "Name ", el("input", { name: "name", value: params.get("name") || "", "aria-label": "Name prefix" })),
    el("button", { type: "submit" }, "Filter"));
  const rows = (list.jobs || []).map(jobRow);
  const next = list.next_page_token
    ? el("a", { href: `#/jobs?${new URLSearchParams({ ...Object.fromEntries(params), page: list.next_page_token })}` }, "next page")
    : "";
  view.replaceChildren(el("h2", {}, "Jobs"), countsBar(st.jobs_by_state || {}), filters,
    el("table", { id: "jobs", "aria-label": "Jobs" },
      el("thead", {}, el("tr", {}, ["id", "name", "state", "attempts"].map((h) => el("th", {}, h)),
        el("th", { class: "wide" }, "submitted"))),
      el("tbody", {}, rows)), next);
}

function jobRow(j) {
  return el("tr", { "data-job": j.id },
    el("td", {}, el("a", { href: `#/job/${j.id}` }, j.id)), el("td", {}, j.spec?.name || ""),
    el("td", {}, stateBadge(j.state)), el("td", {}, (j.attempts || []).length),
    el("td", { class: "wide" }, time(j.submitted_at_ms)));
}

let output = null; // the AbortController of the output stream shown

async function jobView(id) {
  const j = await api(`/v1/jobs/${id}`);
  const attempts = (j.attempts || []).map((a) => el("tr", { "data-attempt": a.number },
    el("td", {}, a.number), el("td", {}, a.node_id), el("td", { class: "wide" }, time(a.assigned_at_ms)),
    el("td", {}, time(a.started_at_ms)), el("td", {}, time(a.finished_at_ms)),
    el("td", { class: "outcome" }, outcomeText(a.outcome)), el("td", { class: "why" }, killReason(a.outcome))));
  const final = ["succeeded", "failed", "cancelled", "timed_out"].includes(stateName(j.state));
  const message = el("p", { id: "cancel-result", role: "status" });
  const cancel = el("button", { id: "cancel", disabled: final ? "" : undefined, onclick: async () => {
    try {
      await api(`/v1/jobs/${id}/cancel`, { method: "POST", body: JSON.stringify({ reason: "from the dashboard" }) });
      message.textContent = "cancelled";
    } catch (e) { message.textContent = e.message; message.className = "error"; }
  } }, "Cancel");
  const pre = el("pre", { class: "output", id: "output", "aria-label": "Output" });
  const history = el("table", { id: "history", "aria-label": "The job's entries in the log" });
  jobHistory(id, history);
  view.replaceChildren(
    el("h2", {}, `Job ${j.id}: ${j.spec?.name || ""} `, stateBadge(j.state)),
    el("div", { class: "facts" },
      el("div", {}, el("span", {}, "command"), (j.spec?.command || []).join(" ")),
      el("div", {}, el("span", {}, "submitted"), time(j.submitted_at_ms)),
      el("div", {}, el("span", {}, "workflow"),
        j.workflow_id ? el("a", { href: `#/workflow/${j.workflow_id}`, id: "workflow-link" }, j.workflow_id) : "none"),
      el("div", {}, el("span", {}, "reason"), j.reason || "")),
    el("p", {}, cancel, " ", message),
    el("h2", {}, "Attempts"),
    el("table", { id: "attempts", "aria-label": "Attempts" },
      el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "node"), el("th", { class: "wide" }, "assigned"),
        el("th", {}, "started"), el("th", {}, "finished"), el("th", {}, "outcome"), el("th", {}, "why"))),
      el("tbody", {}, attempts)),
    el("h2", {}, "Output"), pre,
    el("h2", {}, "History in the log"), history,
    el("h2", {}, "Spec"), el("pre", { id: "spec" }, JSON.stringify(j.spec, null, 2)));
  if ((j.attempts || []).length) followOutput(id, pre);
  else pre.textContent = "(no attempt yet)";
}

// The entries that changed this job: the event stream filtered by job (every position
// the node holds), each entry read from the log for its term and what it decided.
async function jobHistory(id, table) {
  const r = await fetch(`/v1/events?job_id=${id}&from_index=0&stop_at_applied=true`, { headers: headers() });
  if (!r.ok) return;
  const events = (await r.text()).split("\n").filter((l) => l.startsWith("data: ")).map((l) => JSON.parse(l.slice(6)));
  const rows = await Promise.all(events.map(async (e) => {
    let entry = {};
    try { entry = ((await api(`/v1/log?from_index=${e.index}&limit=1`)).entries || [])[0] || {}; } catch (_) {}
    return el("tr", { "data-index": e.index },
      el("td", {}, el("a", { href: `#/log?from=${e.index}` }, e.index)), el("td", {}, entry.term || ""),
      el("td", {}, e.kind), el("td", { class: "wide" }, entry.summary || ""));
  }));
  table.replaceChildren(el("thead", {}, el("tr", {}, ["index", "term", "event"].map((h) => el("th", {}, h)),
    el("th", { class: "wide" }, "entry"))), el("tbody", {}, rows));
}

// ---- the log: recent entries, checkpoints, snapshots ----

async function logView(params) {
  const q = new URLSearchParams({ limit: "50" });
  if (params.get("from")) q.set("from_index", params.get("from"));
  const log = await api("/v1/log?" + q);
  const entries = (log.entries || []).map((e) => el("tr", { "data-index": e.index },
    el("td", {}, e.index || 0), el("td", {}, e.term || 0), el("td", { class: "wide" }, e.leader_id || 0),
    el("td", {}, e.kind), el("td", {}, e.summary), el("td", { class: "wide" }, e.bytes || 0)));
  view.replaceChildren(
    el("h2", {}, "Log"),
    el("div", { class: "facts" },
      el("div", {}, el("span", {}, "first"), log.first_index || 0),
      el("div", {}, el("span", {}, "last"), log.last_index || 0),
      el("div", {}, el("span", {}, "divergences"), el("b", { id: "divergences" }, log.divergences || 0))),
    el("table", { id: "log", "aria-label": "Log entries" },
      el("thead", {}, el("tr", {}, el("th", {}, "index"), el("th", {}, "term"), el("th", { class: "wide" }, "leader"),
        el("th", {}, "kind"), el("th", {}, "what it decided"), el("th", { class: "wide" }, "bytes"))),
      el("tbody", {}, entries)),
    el("h2", {}, "Checkpoints"),
    el("table", { id: "checkpoints", "aria-label": "Checkpoints" },
      el("thead", {}, el("tr", {}, el("th", {}, "index"), el("th", {}, "state hash"))),
      el("tbody", {}, (log.checkpoints || []).map((c) => el("tr", {}, el("td", {}, c.index), el("td", {}, c.hash))))),
    el("h2", {}, "Snapshots held"),
    el("table", { id: "snapshots", "aria-label": "Snapshots" },
      el("thead", {}, el("tr", {}, el("th", {}, "index"), el("th", {}, "term"), el("th", {}, "bytes"))),
      el("tbody", {}, (log.snapshots || []).map((n) => el("tr", {}, el("td", {}, n.index), el("td", {}, n.term), el("td", {}, n.file_bytes))))));
}

async function followOutput(id, pre) {
  if (output) output.abort();
  const ctl = new AbortController();
  output = ctl;
  try {
    const r = await fetch(`/v1/jobs/${id}/output?follow=true`, { headers: headers(), signal: ctl.signal });
    if (!r.ok) { pre.textContent = (await r.json()).error?.message || r.statusText; return; }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    pre.textContent = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pre.textContent += dec.decode(value, { stream: true });
    }
  } catch (e) { if (!ctl.signal.aborted) pre.textContent += "\n[" + e.message + "]"; }
}

// ---- a workflow: the DAG with each job's state, and a timeline of its attempts ----

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children.flat()) e.append(c instanceof Node ? c : String(c ?? ""));
  return e;
}
const COLOURS = { pending: "#eceff4", assigned: "#e3ecff", running: "#9db8ff", succeeded: "#9fe0ac",
  failed: "#ff9c9c", cancelled: "#d0d0d0", timed_out: "#ffc979" };

async function workflowView(id) {
  const list = await api(`/v1/jobs?workflow_id=${id}&page_size=1000`);
  const jobs = list.jobs || [];
  const byId = new Map(jobs.map((j) => [j.id, j]));
  // Layers: a job one to the right of its deepest dependency in the workflow.
  const level = new Map();
  const depth = (j) => {
    if (level.has(j.id)) return level.get(j.id);
    level.set(j.id, 0);
    const deps = (j.spec?.depends_on || []).filter((d) => byId.has(d));
    const l = deps.length ? 1 + Math.max(...deps.map((d) => depth(byId.get(d)))) : 0;
    level.set(j.id, l);
    return l;
  };
  jobs.forEach(depth);
  const columns = [];
  for (const j of jobs) (columns[level.get(j.id)] ||= []).push(j);
  const W = 170, H = 44, GX = 60, GY = 18;
  const pos = new Map();
  columns.forEach((col, x) => col.forEach((j, y) => pos.set(j.id, { x: 10 + x * (W + GX), y: 10 + y * (H + GY) })));
  const width = 20 + columns.length * (W + GX);
  const height = 20 + Math.max(1, ...columns.map((c) => c.length)) * (H + GY);
  const edges = jobs.flatMap((j) => (j.spec?.depends_on || []).filter((d) => pos.has(d)).map((d) => {
    const a = pos.get(d), b = pos.get(j.id);
    return svg("line", { class: "dag-edge", x1: a.x + W, y1: a.y + H / 2, x2: b.x, y2: b.y + H / 2,
      stroke: "#8892a6", "stroke-width": 1.5, "marker-end": "url(#arrow)" });
  }));
  const boxes = jobs.map((j) => {
    const p = pos.get(j.id), st = stateName(j.state);
    return svg("a", { href: `#/job/${j.id}` },
      svg("g", { class: "dag-node", "data-job": j.id, "data-state": st, role: "img",
        "aria-label": `job ${j.id} ${j.spec?.name || ""}: ${st}` },
        svg("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6, fill: COLOURS[st] || "#fff", stroke: "#5d6677" }),
        svg("text", { x: p.x + 8, y: p.y + 18, "font-size": 13 }, `${j.id} ${j.spec?.name || ""}`.slice(0, 24)),
        svg("text", { x: p.x + 8, y: p.y + 35, "font-size": 12, fill: "#333" }, st)));
  });
  const dag = svg("svg", { id: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": `Workflow ${id} as a graph` },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8892a6" }))),
    edges, boxes);
  view.replaceChildren(el("h2", {}, `Workflow ${id}`), el("div", { class: "scroll" }, dag),
    el("h2", {}, "Timeline"), el("div", { class: "scroll" }, timeline(jobs)));
}

// One row per job, one bar per attempt from its start (or assignment) to its end (or now).
function timeline(jobs) {
  const attempts = jobs.flatMap((j) => (j.attempts || []).map((a) => ({ j, a })));
  const t = (v) => Number(v || 0);
  const start = Math.min(...attempts.map(({ a }) => t(a.started_at_ms || a.assigned_at_ms)), Date.now());
  const end = Math.max(...attempts.map(({ a }) => t(a.finished_at_ms) || Date.now()), start + 1);
  const W = 900, L = 170, R = 20, H = 22;
  const x = (v) => L + ((v - start) / (end - start)) * (W - L - R);
  const rows = jobs.map((j, i) => [
    svg("text", { x: 4, y: 16 + i * H, "font-size": 12 }, `${j.id} ${j.spec?.name || ""}`.slice(0, 22)),
    ...(j.attempts || []).map((a) => {
      const from = x(t(a.started_at_ms || a.assigned_at_ms)), to = x(t(a.finished_at_ms) || Date.now());
      return svg("rect", { class: "gantt-bar", "data-job": j.id, "data-attempt": a.number, x: from, y: 4 + i * H,
        width: Math.max(2, to - from), height: H - 8, fill: a.outcome ? (a.outcome.code === undefined || a.outcome.code === 0 ? "#7cc98b" : "#f08080") : "#9db8ff" },
        svg("title", {}, `attempt ${a.number} on ${a.node_id}: ${outcomeText(a.outcome) || "running"}`));
    }),
  ]);
  return svg("svg", { id: "gantt", width: W, height: 10 + jobs.length * H, role: "group",
    "aria-label": `Attempts over time, ${((end - start) / 1000).toFixed(1)} s` }, rows.flat());
}

// ---- routing and live updates ----

async function route() {
  const hash = location.hash || "#/cluster";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", hash.startsWith(a.getAttribute("href")));
  if (output && !path.startsWith("/job/")) { output.abort(); output = null; }
  try {
    if (path.startsWith("/log")) {
      current = { path, render: () => logView(params), concerns: () => !params.get("from") };
    } else if (path.startsWith("/workflow/")) {
      const id = path.slice(10);
      current = { path, render: () => workflowView(id), concerns: (e) => e.workflow_id === id };
    } else if (path.startsWith("/job/")) {
      const id = path.slice(5);
      current = { path, render: () => jobView(id), concerns: (e) => e.job_id === id };
    } else if (path.startsWith("/jobs")) {
      current = { path, render: () => jobsView(params), concerns: (e) => e.kind.startsWith("job_") };
    } else {
      current = { path, render: () => clusterView(),
        concerns: (e) => e.kind.startsWith("node_") || e.kind === "leader_changed" || e.kind.startsWith("job_") };
    }
    await current.render();
  } catch (e) {
    view.replaceChildren(el("p", { class: "error", role: "alert" }, e.message));
  }
}

// An event re-reads only the view it concerns, at most once per 250 ms.
let pending = null;
onEvent((e) => {
  if (!current || !current.concerns(e) || pending) return;
  pending = setTimeout(async () => {
    pending = null;
    await current.render().catch(() => {});
  }, 250);
});

window.addEventListener("hashchange", route);
connectEvents();
route();
