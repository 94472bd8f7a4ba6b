// Cathedral's dashboard: views over the REST API (/v1), kept live by the event stream
// (/v1/events). Plain JavaScript, no library, no build step: served from the binary.
"use strict";

const STATES = ["JOB_STATE_PENDING", "JOB_STATE_ASSIGNED", "JOB_STATE_RUNNING",
  "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_TIMED_OUT"];
const view = document.getElementById("view");
const live = document.getElementById("live");
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("cathedral-token") || "";
tokenInput.addEventListener("change", async () => {
  sessionStorage.setItem("cathedral-token", tokenInput.value);
  await loadNamespaces();
  connectEvents();
  route();
});

// The namespace the views show: one, or "*" (every namespace the token may read). Jobs,
// workflows, crons and the event stream are read in it; the cluster's counts span all.
const nsSelect = document.getElementById("namespace");
const ns = () => nsSelect.value || "*";
nsSelect.addEventListener("change", () => {
  sessionStorage.setItem("cathedral-namespace", ns());
  connectEvents();
  route();
});
// `path` with the namespace as its `namespace` query parameter.
function inNs(path, namespace = ns()) {
  return `${path}${path.includes("?") ? "&" : "?"}namespace=${encodeURIComponent(namespace)}`;
}
// Fills the selector with the namespaces the token may read (keeping the choice made).
async function loadNamespaces() {
  let names = [];
  try { names = ((await api("/v1/namespaces")).namespaces || []).map((n) => n.name); } catch (_) {}
  const want = sessionStorage.getItem("cathedral-namespace") || "*";
  nsSelect.replaceChildren(el("option", { value: "*" }, "all namespaces"),
    ...names.map((n) => el("option", { value: n }, n)));
  nsSelect.value = want === "*" || names.includes(want) ? want : "*";
}

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
const FINAL = ["succeeded", "failed", "cancelled", "timed_out"];
// The states a workflow may be rerun from.
const RERUNNABLE = ["failed", "cancelled", "timed_out"];
const byName = ([a], [b]) => (a < b ? -1 : a > b ? 1 : 0);

// A duration in words, to the unit that matters: "850 ms", "4.2 s", "3 min 20 s", "5 h 12 min".
function duration(ms) {
  ms = Math.abs(Number(ms));
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60e3) return `${(ms / 1000).toFixed(ms < 10e3 ? 1 : 0)} s`;
  if (ms < 3600e3) return `${Math.floor(ms / 60e3)} min ${Math.round((ms % 60e3) / 1000)} s`;
  if (ms < 86400e3) return `${Math.floor(ms / 3600e3)} h ${Math.round((ms % 3600e3) / 60e3)} min`;
  return `${Math.floor(ms / 86400e3)} d ${Math.round((ms % 86400e3) / 3600e3)} h`;
}
// A time to come or gone, relative to now: "in 5 h 12 min", "3 s ago".
const fromNow = (ms) => (Number(ms) >= Date.now() ? `in ${duration(Number(ms) - Date.now())}` : `${duration(Date.now() - Number(ms))} ago`);

// ---- nodes by name: the operator's `name` tag, else the address; the id stays in a tooltip ----

let nodeIndex = new Map(); // id -> NodeView
let nodesReadAt = 0;
// Views that name nodes read /v1/nodes at most every few seconds: names change rarely.
async function loadNodes(maxAgeMs = 5000) {
  if (Date.now() - nodesReadAt < maxAgeMs) return nodeIndex;
  try {
    const r = await api("/v1/nodes");
    nodeIndex = new Map((r.nodes || []).map((n) => [String(n.id), n]));
    nodesReadAt = Date.now();
  } catch (_) { /* names fall back to ids */ }
  return nodeIndex;
}
const nameOf = (n) => n?.tags?.name || n?.address || "";
const nodeName = (id) => nameOf(nodeIndex.get(String(id))) || `node ${id}`;
function nodeLink(id) {
  if (!id || id === "0") return "";
  return el("a", { class: "node", href: `#/jobs?node=${id}`, title: `node ${id}`, "data-node-id": id }, nodeName(id));
}
function tagList(tags) {
  return el("span", { class: "tags" }, Object.entries(tags || {}).sort(byName)
    .map(([k, v]) => el("span", { class: "tag", "data-tag": k }, `${k}=${v}`)));
}
// Server text names nodes by id ("attempt 2 on node 7: …"); say the node's name instead,
// with the id after it when asked (tooltips, where there is room).
function named(text, withId = false) {
  return String(text || "").replace(/\bnode (\d+)\b/g, (all, id) =>
    nodeIndex.has(id) ? (withId ? `${nodeName(id)} (node ${id})` : nodeName(id)) : all);
}

// An attempt in words. The server's summary says it ("exited with status 3 after 1.2 s",
// "stopped, the job was cancelled"); without one (an older server) the outcome does. An
// attempt of a job already ended never reads as running: it ended with the job.
function attemptWords(a, jobState) {
  if (a.summary) return a.summary;
  const what = outcomeText(a.outcome) || (a.finished_at_ms || FINAL.includes(stateName(jobState))
    ? `ended with the job (${stateName(jobState)})` : "running");
  return `attempt ${a.number} on node ${a.node_id}: ${what}`;
}
// The same without "attempt N on node M: ", where the table's columns already say it.
const attemptShort = (a, jobState) => named(attemptWords(a, jobState).replace(/^attempt \d+ on node \d+: /, ""));

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

// A status line whose text outlives the re-renders live events cause (a click's answer
// would otherwise vanish when the job it changed re-renders the page); cleared when the
// view changes.
const notes = new Map();
function statusLine(id) {
  const p = el("p", { id, role: "status", class: "note" });
  const n = notes.get(id);
  if (n) { p.textContent = n.text; if (n.error) p.classList.add("error"); }
  return p;
}
function tell(p, text, error = false) {
  notes.set(p.id, { text, error });
  p.textContent = text;
  p.classList.toggle("error", error);
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
      const r = await fetch(inNs("/v1/events"), { headers: h, signal: ctl.signal });
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

let current = null; // { path, render, concerns, every }

async function clusterView() {
  const [st, nodes] = await Promise.all([api("/v1/cluster"), api("/v1/nodes")]);
  nodeIndex = new Map((nodes.nodes || []).map((n) => [String(n.id), n]));
  nodesReadAt = Date.now();
  const members = st.members || [];
  const memberIds = new Set(members.map((m) => m.id));
  // Raft's members first (voters and learners), then nodes only the job state or gossip
  // knows (workers): an operator looks for every machine here.
  const listed = [...members.map((m) => ({ id: m.id, address: m.address, raft: m.role })),
    ...[...nodeIndex.values()].filter((n) => !memberIds.has(n.id)).map((n) => ({ id: n.id, address: n.address, raft: "" }))];
  const rows = listed.map((m) => {
    const n = nodeIndex.get(m.id) || {};
    return el("tr", { "data-node": m.id },
      el("td", {}, el("span", { class: "node-name", title: `node ${m.id}` }, n.tags?.name || m.address || n.address || m.id),
        m.id === st.leader_id ? el("strong", { class: "leader" }, " (leader)") : "",
        el("br"), el("small", { class: "id" }, m.id)),
      el("td", {}, m.address), el("td", {}, `${n.role || ""} ${m.raft}`),
      el("td", {}, `${n.state || ""} / ${n.gossip_state || ""}`),
      el("td", { class: "wide" }, n.phi !== undefined ? Number(n.phi).toFixed(2) : ""),
      el("td", { class: "wide" }, el("a", { href: `#/jobs?node=${m.id}` }, `${n.running || 0} / ${n.slots || 0}`)),
      el("td", { class: "wide" }, tagList(n.tags)));
  });
  const counts = st.jobs_by_state || {};
  view.replaceChildren(
    el("h2", {}, "Cluster"),
    el("div", { class: "facts", id: "cluster-facts" },
      el("div", {}, el("span", {}, "leader"), el("b", { id: "leader" }, st.leader_id || "none"),
        st.leader_id ? el("small", { class: "id" }, ` ${nodeName(st.leader_id)}`) : ""),
      el("div", {}, el("span", {}, "term"), st.term),
      el("div", {}, el("span", {}, "commit"), st.commit_index),
      el("div", {}, el("span", {}, "applied"), st.applied_index),
      el("div", {}, el("span", {}, "this node"), `${nodeName(st.node_id)} (${st.server_state})`),
      el("div", {}, el("span", {}, "state hash"), (st.state_hash || "").slice(0, 16)),
      el("div", {}, el("span", {}, "gossip"), `${nodes.health || ""} (${nodes.alive || 0} of ${nodes.known || 0} alive)`)),
    el("h2", {}, "Nodes"),
    el("table", { id: "members", "aria-label": "Nodes" },
      el("thead", {}, el("tr", {}, ["node", "address", "role", "state / gossip"].map((h) => el("th", {}, h)),
        ["phi", "running / slots", "tags"].map((h) => el("th", { class: "wide" }, h)))),
      el("tbody", {}, rows)),
    el("p", {}, el("a", { href: "#/charts", id: "charts-link" }, "Charts of the last hour")),
    el("h2", {}, "Jobs"),
    countsBar(counts));
}

function countsBar(counts) {
  return el("div", { class: "counts", id: "counts", "aria-label": "Jobs by state" },
    STATES.map((s) => el("a", { href: `#/jobs?state=${s}`, "data-state": stateName(s) },
      `${stateName(s)} `, el("b", { class: "count" }, counts[stateName(s)] || 0))));
}

// ---- jobs: newest first, searched by name prefix, state and node ----

async function jobsView(params) {
  const q = new URLSearchParams({ page_size: "50", newest_first: "true" });
  if (params.get("state")) q.set("state", params.get("state"));
  if (params.get("name")) q.set("name_prefix", params.get("name"));
  if (params.get("node")) q.set("node_id", params.get("node"));
  if (params.get("page")) q.set("page_token", params.get("page"));
  const [list, st] = await Promise.all([api(inNs("/v1/jobs?" + q)), api("/v1/cluster"), loadNodes()]);
  const nodeOptions = [...nodeIndex.values()].map((n) => [nameOf(n) || n.id, n.id]).sort(byName);
  const filters = el("form", { class: "filters", role: "search", "aria-label": "Search jobs", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const p = new URLSearchParams();
    for (const k of ["state", "name", "node"]) if (f.get(k)) p.set(k, f.get(k));
    location.hash = "#/jobs?" + p;
  } },
    el("label", {}, "State ", el("select", { name: "state", id: "filter-state", "aria-label": "State" },
      el("option", { value: "" }, "any"),
      STATES.map((s) => el("option", s === params.get("state") ? { value: s, selected: "" } : { value: s }, stateName(s))))),
    el("label", {}, "Name ", el("input", { name: "name", id: "filter-name", value: params.get("name") || "",
      "aria-label": "Name prefix", placeholder: "starts with…" })),
    el("label", {}, "Node ", el("select", { name: "node", id: "filter-node", "aria-label": "Node" },
      el("option", { value: "" }, "any"),
      nodeOptions.map(([label, id]) => el("option", { value: id, title: `node ${id}`,
        selected: id === params.get("node") ? "" : undefined }, label)))),
    el("button", { type: "submit", id: "filter-submit" }, "Search"),
    params.toString() ? el("a", { href: "#/jobs", id: "filter-clear" }, "clear") : "");
  const rows = (list.jobs || []).map(jobRow);
  const next = list.next_page_token
    ? el("a", { href: `#/jobs?${new URLSearchParams({ ...Object.fromEntries(params), page: list.next_page_token })}`, id: "next-page" }, "next page")
    : "";
  view.replaceChildren(el("h2", {}, "Jobs"), countsBar(st.jobs_by_state || {}), filters,
    el("table", { id: "jobs", "aria-label": "Jobs, newest first" },
      el("thead", {}, el("tr", {}, ["id", "name", "state", "attempts", "node"].map((h) => el("th", {}, h)),
        el("th", { class: "wide" }, "submitted"))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No job matches.")))),
    el("p", {}, next));
}

function jobRow(j) {
  const attempts = j.attempts || [];
  const last = attempts[attempts.length - 1];
  return el("tr", { "data-job": j.id },
    el("td", {}, el("a", { href: `#/job/${j.id}` }, j.id)),
    el("td", { class: "name" }, j.spec?.name || "", ns() === "*" && j.namespace && j.namespace !== "default"
      ? el("small", { class: "ns", "data-namespace": j.namespace }, ` ${j.namespace}`) : ""),
    el("td", {}, stateBadge(j.state)), el("td", {}, attempts.length),
    el("td", { class: "node" }, last ? nodeLink(last.node_id) : ""),
    el("td", { class: "wide" }, time(j.submitted_at_ms)));
}

// ---- one job: its attempts in words, why it is where it is, its output and history ----

let output = null; // the AbortController of the output stream shown

async function jobView(id) {
  const [j, why] = await Promise.all([api(inNs(`/v1/jobs/${id}`)), api(inNs(`/v1/jobs/${id}/explain`)).catch((e) => ({ error: e.message })), loadNodes()]);
  const st = stateName(j.state);
  const attempts = (j.attempts || []).map((a) => el("tr", { "data-attempt": a.number },
    el("td", {}, a.number), el("td", {}, nodeLink(a.node_id)), el("td", { class: "wide" }, time(a.assigned_at_ms)),
    el("td", {}, time(a.started_at_ms)), el("td", {}, time(a.finished_at_ms)),
    el("td", { class: "outcome", title: named(attemptWords(a, j.state), true) }, attemptShort(a, j.state)),
    el("td", { class: "why" }, killReason(a.outcome))));
  const final = FINAL.includes(st);
  const message = statusLine("cancel-result");
  const cancel = el("button", { id: "cancel", disabled: final ? "" : undefined, onclick: async () => {
    try {
      await api(`/v1/jobs/${id}/cancel`, { method: "POST", body: JSON.stringify({ reason: "from the dashboard", namespace: j.namespace || "" }) });
      tell(message, "cancelled");
    } catch (e) { tell(message, e.message, true); }
  } }, "Cancel");
  const inWorkflow = j.workflow_id && j.workflow_id !== "0";
  const rerunResult = statusLine("rerun-result");
  // A failed, cancelled or timed-out step of a workflow runs again from here, with every
  // step after it; the steps before keep their results.
  const rerun = inWorkflow && RERUNNABLE.includes(st)
    ? el("button", { id: "rerun-here", onclick: (ev) => rerunWorkflow(j.workflow_id, { from_job_id: j.id, namespace: j.namespace || "" }, rerunResult, ev.target) },
      "Rerun from here")
    : "";
  const pre = el("pre", { class: "output", id: "output", "aria-label": "Output" });
  const history = el("table", { id: "history", "aria-label": "The job's entries in the log" });
  jobHistory(id, history);
  view.replaceChildren(
    el("h2", {}, `Job ${j.id}: ${j.spec?.name || ""} `, stateBadge(j.state)),
    el("div", { class: "facts" },
      el("div", {}, el("span", {}, "command"), (j.spec?.command || []).join(" ")),
      el("div", {}, el("span", {}, "submitted"), time(j.submitted_at_ms)),
      el("div", {}, el("span", {}, "workflow"),
        inWorkflow ? el("a", { href: `#/workflow/${j.workflow_id}`, id: "workflow-link" }, j.workflow_id) : "none"),
      el("div", {}, el("span", {}, "reason"), named(j.reason || "")),
      // A retention of its own (0: kept).
      j.spec?.retain_ms != null
        ? el("div", { id: "retain" }, el("span", {}, "retain"),
          Number(j.spec.retain_ms) === 0 ? "kept (not collected)" : `${duration(Number(j.spec.retain_ms))} after it ends`)
        : "",
      // Collected by retention: answered from the node's archive.
      j.collected_at_ms
        ? el("div", { id: "collected" }, el("span", {}, "collected"), `${time(j.collected_at_ms)} (from the archive)`)
        : ""),
    el("div", { class: "actions" }, cancel, rerun, message, rerunResult),
    el("h2", {}, "Why it is where it is"), explainSection(why),
    el("h2", {}, "Attempts"),
    el("table", { id: "attempts", "aria-label": "Attempts" },
      el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "node"), el("th", { class: "wide" }, "assigned"),
        el("th", {}, "started"), el("th", {}, "finished"), el("th", {}, "in words"), el("th", {}, "why"))),
      el("tbody", {}, attempts.length ? attempts : el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No attempt yet.")))),
    el("h2", {}, "Output"), pre,
    el("h2", {}, "History in the log"), history,
    el("h2", {}, "Spec"), el("pre", { id: "spec" }, JSON.stringify(j.spec, null, 2)));
  if ((j.attempts || []).length) followOutput(id, pre);
  else pre.textContent = "(no attempt yet)";
}

// The scheduler's account of a job (/v1/jobs/{id}/explain): a sentence, its details, and
// for a runnable job each node's verdict.
function explainSection(x) {
  if (x.error) return el("section", { id: "explain", "aria-label": "Explain" }, el("p", { class: "error" }, x.error));
  const facts = [];
  if (x.runnable_at_ms && x.runnable_at_ms !== "0") {
    facts.push(el("div", {}, el("span", {}, "runnable"), `${time(x.runnable_at_ms)} (${fromNow(x.runnable_at_ms)})`));
  }
  if (x.would_place_on && x.would_place_on !== "0") {
    facts.push(el("div", { id: "explain-place" }, el("span", {}, "would place on"), nodeLink(x.would_place_on)));
  }
  const nodes = (x.nodes || []).map((n) => el("tr", { "data-node": n.node_id, "data-fits": String(!!n.fits) },
    el("td", {}, nodeLink(n.node_id)), el("td", {}, n.fits ? "fits" : "does not fit"), el("td", {}, named(n.why))));
  return el("section", { id: "explain", "aria-label": "Explain" },
    el("p", { id: "explain-summary", class: "summary" }, named(x.summary || "")),
    (x.details || []).length ? el("ul", { id: "explain-details" }, x.details.map((d) => el("li", {}, named(d)))) : "",
    facts.length ? el("div", { class: "facts" }, facts) : "",
    nodes.length ? el("table", { id: "explain-nodes", "aria-label": "Each node's verdict" },
      el("thead", {}, el("tr", {}, el("th", {}, "node"), el("th", {}, "verdict"), el("th", {}, "why"))),
      el("tbody", {}, nodes)) : "");
}

// POST a rerun; its answer (or refusal) goes to the status line.
async function rerunWorkflow(workflowId, from, line, button) {
  if (button) button.disabled = true;
  try {
    const r = await api(`/v1/workflows/${workflowId}/rerun`, { method: "POST", body: JSON.stringify(from) });
    tell(line, `rerunning jobs ${(r.job_ids || []).join(", ")}`);
  } catch (e) {
    tell(line, e.message, true);
    if (button) button.disabled = false;
  }
}

// The entries that changed this job: the event stream filtered by job (every position
// the node holds), each entry read from the log for its term and what it decided.
async function jobHistory(id, table) {
  const r = await fetch(inNs(`/v1/events?job_id=${id}&from_index=0&stop_at_applied=true`), { headers: headers() });
  if (!r.ok) return;
  const events = (await r.text()).split("\n").filter((l) => l.startsWith("data: ")).map((l) => JSON.parse(l.slice(6)));
  const rows = await Promise.all(events.map(async (e) => {
    let entry = {};
    try { entry = ((await api(`/v1/log?from_index=${e.index}&limit=1`)).entries || [])[0] || {}; } catch (_) {}
    return el("tr", { "data-index": e.index },
      el("td", {}, el("a", { href: `#/log?from=${e.index}` }, e.index)), el("td", {}, entry.term || ""),
      el("td", {}, e.kind), el("td", { class: "wide" }, named(entry.summary || "")));
  }));
  table.replaceChildren(el("thead", {}, el("tr", {}, ["index", "term", "event"].map((h) => el("th", {}, h)),
    el("th", { class: "wide" }, "entry"))), el("tbody", {}, rows));
}

// ---- the log: recent entries, checkpoints, snapshots ----

async function logView(params) {
  const q = new URLSearchParams({ limit: "50" });
  if (params.get("from")) q.set("from_index", params.get("from"));
  const [log] = await Promise.all([api("/v1/log?" + q), loadNodes()]);
  const entries = (log.entries || []).map((e) => el("tr", { "data-index": e.index },
    el("td", {}, e.index || 0), el("td", {}, e.term || 0),
    el("td", { class: "wide" }, e.leader_id && e.leader_id !== "0" ? nodeLink(e.leader_id) : 0),
    el("td", {}, e.kind), el("td", { title: e.summary }, named(e.summary)), el("td", { class: "wide" }, e.bytes || 0)));
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
    const r = await fetch(inNs(`/v1/jobs/${id}/output?follow=true`), { headers: headers(), signal: ctl.signal });
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

// ---- workflows: the list, newest first, each with its jobs' states counted ----

const WORKFLOW_STATES = ["running", "succeeded", "failed"];
// Counts by state in the order a job goes through them, only the states it has.
function stateCounts(counts) {
  return el("span", { class: "state-counts" }, STATES.map(stateName)
    .filter((s) => Number(counts?.[s] || 0) > 0)
    .map((s) => el("span", { class: "state s-" + s, "data-state": s, "data-count": Number(counts[s]) }, `${Number(counts[s])} ${s}`)));
}
const workflowBadge = (s) => el("span", { class: "state s-" + (s || "running"), "data-state": s || "" }, s || "unknown");

async function workflowsView(params) {
  const q = new URLSearchParams({ page_size: "50" });
  if (params.get("name")) q.set("name_prefix", params.get("name"));
  if (params.get("page")) q.set("page_token", params.get("page"));
  const list = await api(inNs("/v1/workflows?" + q));
  const filters = el("form", { class: "filters", role: "search", "aria-label": "Search workflows", onsubmit: (ev) => {
    ev.preventDefault();
    const name = new FormData(ev.target).get("name");
    location.hash = "#/workflows" + (name ? "?" + new URLSearchParams({ name }) : "");
  } },
    el("label", {}, "Name ", el("input", { name: "name", id: "workflow-filter-name", value: params.get("name") || "",
      "aria-label": "Workflow name prefix", placeholder: "starts with…" })),
    el("button", { type: "submit" }, "Search"));
  const rows = (list.workflows || []).map((w) => el("tr", { "data-workflow": w.id, "data-state": w.state || "" },
    el("td", { class: "name" }, el("a", { href: `#/workflow/${w.id}` }, w.name || `workflow ${w.id}`)),
    el("td", {}, w.id), el("td", { class: "wf-state" }, workflowBadge(w.state)),
    el("td", { class: "counts-cell" }, stateCounts(w.jobs_by_state)),
    el("td", { class: "wide" }, time(w.submitted_at_ms), " ", el("small", {}, `(${fromNow(w.submitted_at_ms)})`))));
  const next = list.next_page_token
    ? el("a", { href: `#/workflows?${new URLSearchParams({ ...Object.fromEntries(params), page: list.next_page_token })}`, id: "next-page" }, "next page")
    : "";
  view.replaceChildren(el("h2", {}, "Workflows"), filters,
    el("table", { id: "workflows", "aria-label": "Workflows, newest first" },
      el("thead", {}, el("tr", {}, ["name", "id", "state", "jobs"].map((h) => el("th", {}, h)),
        el("th", { class: "wide" }, "submitted"))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No workflow yet.")))),
    el("p", {}, next));
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
  const [list, wf] = await Promise.all([api(inNs(`/v1/jobs?workflow_id=${id}&page_size=1000`)),
    api(inNs(`/v1/workflows/${id}`)).catch((error) => ({ id, error })), loadNodes()]);
  const jobs = list.jobs || [];
  // Without its name (a server before workflows were listed) the jobs still draw it.
  if (wf.error && !jobs.length) throw wf.error;
  const byId = new Map(jobs.map((j) => [j.id, j]));
  const keyOf = new Map(Object.entries(wf.job_ids || {}).map(([k, v]) => [String(v), k]));
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
  const title = wf.name || `workflow ${id}`;
  const dag = svg("svg", { id: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": `Workflow ${title} as a graph` },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8892a6" }))),
    edges, boxes);
  view.replaceChildren(
    el("h2", { id: "workflow-title", "data-workflow": id }, `Workflow ${title} `, el("small", { class: "id" }, `#${id} `),
      wf.state ? workflowBadge(wf.state) : ""),
    el("div", { class: "facts" },
      el("div", {}, el("span", {}, "submitted"), time(wf.submitted_at_ms || jobs[0]?.submitted_at_ms)),
      el("div", {}, el("span", {}, "jobs"), stateCounts(wf.jobs_by_state || {}))),
    rerunForm(id, jobs, keyOf),
    el("div", { class: "scroll" }, dag),
    el("h2", {}, "Timeline"), el("div", { class: "scroll" }, timeline(jobs)));
}

// Rerun a failed, cancelled or timed-out job of the workflow, and every job after it. The
// choice survives re-renders (events re-read the view while the operator picks).
function rerunForm(id, jobs, keyOf) {
  const was = document.getElementById("rerun-from")?.value;
  const choices = jobs.filter((j) => RERUNNABLE.includes(stateName(j.state)));
  const line = statusLine("rerun-result");
  const select = el("select", { id: "rerun-from", name: "from", "aria-label": "Rerun from job", disabled: choices.length ? undefined : "" },
    choices.length ? choices.map((j) => el("option", { value: j.id, selected: j.id === was ? "" : undefined },
      `${keyOf.get(j.id) || j.spec?.name || ""} (job ${j.id}, ${stateName(j.state)})`))
      : el("option", { value: "" }, "no failed, cancelled or timed-out job"));
  return el("form", { class: "filters rerun", id: "rerun-form", "aria-label": "Rerun the workflow", onsubmit: (ev) => {
    ev.preventDefault();
    const namespace = jobs.find((j) => j.id === select.value)?.namespace || "";
    if (select.value) rerunWorkflow(id, { from_job_id: select.value, namespace }, line, ev.target.querySelector("button"));
  } },
    el("label", {}, "Rerun from ", select),
    el("button", { type: "submit", id: "rerun", disabled: choices.length ? undefined : "" }, "Rerun"), line);
}

// Tick positions for [lo, hi]: a round step (1, 2 or 5 times a power of ten) giving at
// most `most` ticks.
function ticks(lo, hi, most = 6) {
  const span = Math.max(hi - lo, 1e-9);
  const raw = span / most;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return { step, values: out };
}
// Clock ticks for [t0, t1] (ms) on round times: whole seconds, minutes, quarter hours.
const CLOCK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200].map((s) => s * 1000);
function clockTicks(t0, t1, most = 4) {
  const step = CLOCK_STEPS.find((s) => (t1 - t0) / s <= most) || CLOCK_STEPS[CLOCK_STEPS.length - 1];
  const values = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) values.push(t);
  return { step, values };
}

// Seconds as a tick label: as many decimals as the step needs; minutes past two.
function secondsLabel(s, step) {
  if (s >= 3600 && step >= 60) return `${Math.floor(s / 3600)} h${s % 3600 ? ` ${Math.round((s % 3600) / 60)} min` : ""}`;
  if (s >= 120 && step >= 1) return `${Math.floor(s / 60)} min${s % 60 ? ` ${Math.round(s % 60)} s` : ""}`;
  const decimals = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step)));
  return `${s.toFixed(decimals)} s`;
}

// What became of an attempt, as the colour of its bar.
function attemptColour(a) {
  const o = a.outcome;
  if (!a.finished_at_ms && !o) return "#9db8ff"; // running
  if (!o || o.lost) return "#c4c4c4"; // stopped with its job, lost
  return o.code === undefined && o.signal === undefined && !o.timed_out || o.code === 0 ? "#7cc98b" : "#f08080";
}

// One row per job, one bar per attempt from its start (or assignment) to its end (or now),
// under an axis of seconds since the first attempt began.
function timeline(jobs) {
  const attempts = jobs.flatMap((j) => (j.attempts || []).map((a) => ({ j, a })));
  const t = (v) => Number(v || 0);
  const now = Date.now();
  const start = Math.min(...attempts.map(({ a }) => t(a.started_at_ms || a.assigned_at_ms)), now);
  const end = Math.max(...attempts.map(({ a }) => t(a.finished_at_ms) || now), start + 100);
  const W = 900, L = 170, R = 30, H = 22;
  const x = (v) => L + ((v - start) / (end - start)) * (W - L - R);
  const top = 4, bottom = top + jobs.length * H;
  const rows = jobs.map((j, i) => [
    svg("text", { x: 4, y: top + 12 + i * H, "font-size": 12 }, svg("title", {}, `job ${j.id}: ${stateName(j.state)}`),
      `${j.id} ${j.spec?.name || ""}`.slice(0, 22)),
    ...(j.attempts || []).map((a) => {
      const from = x(t(a.started_at_ms || a.assigned_at_ms)), to = x(t(a.finished_at_ms) || now);
      const began = t(a.started_at_ms || a.assigned_at_ms), ended = t(a.finished_at_ms);
      return svg("rect", { class: "gantt-bar", "data-job": j.id, "data-attempt": a.number, "data-node-id": a.node_id,
        x: from, y: top + i * H + 2, width: Math.max(2, to - from), height: H - 8, fill: attemptColour(a) },
        svg("title", {}, `${named(attemptWords(a, j.state), true)} — from ${time(began)}`
          + (ended ? ` to ${time(ended)} (${duration(ended - began)})` : ", still running")));
    }),
  ]);
  // The axis: seconds since the first attempt began, with faint lines across the rows.
  // Past a minute, steps a clock would use (30 s, 5 min, 1 h) rather than 50 s or 500 s.
  const span = (end - start) / 1000;
  const clockwise = clockTicks(0, end - start, 8);
  const { step, values } = span > 60
    ? { step: clockwise.step / 1000, values: clockwise.values.map((v) => v / 1000) } : ticks(0, span, 8);
  const axis = svg("g", { class: "gantt-axis", role: "img", "aria-label": `time axis, seconds since ${time(start)} UTC` },
    svg("line", { x1: L, y1: bottom, x2: W - R, y2: bottom, stroke: "#5d6677" }),
    values.map((s) => {
      const at = x(start + s * 1000);
      return svg("g", { class: "gantt-tick" },
        svg("line", { x1: at, y1: top, x2: at, y2: bottom + 4, stroke: "#d9dee7" }),
        svg("text", { x: at, y: bottom + 16, "font-size": 11, "text-anchor": "middle", fill: "#5d6677" }, secondsLabel(s, step)));
    }),
    svg("text", { x: 4, y: bottom + 16, "font-size": 11, fill: "#5d6677" }, `from ${time(start).slice(11, 19)} UTC`));
  return svg("svg", { id: "gantt", width: W, height: bottom + 24, role: "group",
    "aria-label": `Attempts over time, ${duration(end - start)} from ${time(start)} UTC` }, axis, rows.flat());
}

// ---- crons: schedules, their next fire, pause and resume ----

async function cronsView() {
  const r = await api(inNs("/v1/crons"));
  const line = statusLine("cron-result");
  const rows = (r.crons || []).map((c) => {
    const s = c.spec || {}, paused = !!c.paused, cronNs = c.namespace || "default";
    const action = paused ? "resume" : "pause";
    const toggle = el("button", { class: "cron-toggle", "data-action": action, "aria-label": `${paused ? "Resume" : "Pause"} cron ${s.name}`,
      onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          await api(inNs(`/v1/crons/${encodeURIComponent(s.name)}/${action}`, cronNs), { method: "POST", body: "{}" });
          tell(line, `${s.name} ${paused ? "resumed" : "paused"}`);
        } catch (e) { tell(line, e.message, true); }
        await current.render().catch(() => {});
      } }, paused ? "Resume" : "Pause");
    const next = Number(c.next_ms || 0);
    return el("tr", { "data-cron": s.name, "data-namespace": cronNs, "data-paused": String(paused) },
      el("td", { class: "name" }, el("a", { href: `#/cron/${encodeURIComponent(s.name)}?ns=${encodeURIComponent(cronNs)}` }, s.name),
        ns() === "*" && cronNs !== "default" ? el("small", { class: "ns", "data-namespace": cronNs }, ` ${cronNs}`) : ""),
      el("td", { class: "schedule" }, el("code", {}, s.schedule || "")), el("td", { class: "tz" }, s.tz || "UTC"),
      el("td", { class: "wide" }, s.job ? `job ${s.job.name || ""}` : s.workflow ? `workflow ${s.workflow.name || ""}` : ""),
      el("td", { class: "next", title: next ? time(next) + " UTC" : "" },
        next ? [fromNow(next), el("br"), el("small", {}, time(next))] : paused ? "none while paused" : "none"),
      el("td", { class: "launched" }, Number(c.launched || 0)), el("td", { class: "skipped" }, Number(c.skipped || 0)),
      el("td", { class: "paused" }, el("span", { class: "state " + (paused ? "s-cancelled" : "s-running"), "data-state": paused ? "paused" : "active" },
        paused ? "paused" : "active")),
      el("td", {}, toggle));
  });
  view.replaceChildren(el("h2", {}, "Crons"), line,
    el("table", { id: "crons", "aria-label": "Crons" },
      el("thead", {}, el("tr", {}, ["name", "schedule", "zone"].map((h) => el("th", {}, h)), el("th", { class: "wide" }, "runs"),
        ["next fire", "launched", "skipped", "state", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No cron yet.")))));
}

// One cron: its spec and its recent decisions (launched, queued, skipped, failed).
async function cronView(name, cronNs) {
  const c = await api(inNs(`/v1/crons/${encodeURIComponent(name)}`, cronNs || (ns() === "*" ? "default" : ns())));
  const s = c.spec || {};
  const fires = (c.history || []).slice().reverse().map((f) => el("tr", { "data-outcome": f.outcome || "" },
    el("td", {}, time(f.scheduled_ms), Number(f.count || 1) > 1 ? ` … ${time(f.through_ms)} (${f.count})` : ""),
    el("td", {}, f.outcome || ""), el("td", {}, f.reason || ""),
    el("td", {}, f.job_id && f.job_id !== "0" ? el("a", { href: `#/job/${f.job_id}` }, `job ${f.job_id}`)
      : f.workflow_id && f.workflow_id !== "0" ? el("a", { href: `#/workflow/${f.workflow_id}` }, `workflow ${f.workflow_id}`) : "")));
  view.replaceChildren(el("h2", {}, `Cron ${s.name} `, el("small", {}, c.paused ? "(paused)" : "")),
    el("div", { class: "facts" },
      el("div", {}, el("span", {}, "schedule"), el("code", {}, s.schedule || ""), ` ${s.tz || "UTC"}`),
      el("div", {}, el("span", {}, "next fire"), c.next_ms ? `${time(c.next_ms)} (${fromNow(c.next_ms)})` : "none"),
      el("div", {}, el("span", {}, "launched"), Number(c.launched || 0)),
      el("div", {}, el("span", {}, "skipped"), Number(c.skipped || 0)),
      el("div", {}, el("span", {}, "created"), time(c.created_at_ms))),
    el("h2", {}, "Recent decisions, newest first"),
    el("table", { id: "cron-history", "aria-label": "Recent decisions" },
      el("thead", {}, el("tr", {}, ["scheduled", "outcome", "why", "launched"].map((h) => el("th", {}, h)))),
      el("tbody", {}, fires.length ? fires : el("tr", {}, el("td", { colspan: 4, class: "empty" }, "No fire yet.")))),
    el("h2", {}, "Spec"), el("pre", { id: "spec" }, JSON.stringify(s, null, 2)));
}

// ---- charts of the last hour: the node's own samples, drawn as small SVG line charts ----

const SERIES = ["#3558d6", "#d64535", "#2e9e5b", "#b07d12"];

// A line chart of one or more series over the samples' times: y from 0 to a round top,
// gaps where a value is missing. `unit` follows each value; `fmt` writes one.
function lineChart({ key, title, unit, at, series, integer = false, fmt = (v) => String(Math.round(v * 100) / 100) }) {
  const W = 420, H = 170, L = 52, R = 12, T = 10, B = 34;
  const points = series.map((s) => s.values.map((v, i) => [at[i], v]).filter(([, v]) => v !== null && v !== undefined && !Number.isNaN(v)));
  const latest = series.map((s, i) => `${s.name} ${points[i].length ? fmt(points[i][points[i].length - 1][1]) + " " + unit : "none"}`).join(", ");
  const label = `${title}, the last ${at.length ? duration(at[at.length - 1] - at[0]) : "hour"}: latest ${latest}`;
  const figure = (body) => el("figure", { class: "chart", id: `chart-${key}`, "data-chart": key },
    el("figcaption", {}, title, " ", el("small", {}, `(${unit})`)), body,
    el("div", { class: "legend" }, series.map((s, i) => el("span", { class: "legend-item" },
      el("span", { class: "swatch", style: `background:${s.colour || SERIES[i]}` }), s.name))));
  if (!points.some((p) => p.length)) {
    return figure(el("p", { class: "chart-empty", role: "note" }, at.length ? "No value yet in these samples." : "No samples yet."));
  }
  // The newest sample at the right edge; at least a minute across, so that a node just
  // started does not stretch its first samples over the whole width.
  const t1 = at[at.length - 1], t0 = Math.min(at[0], t1 - 60e3);
  const top = Math.max(...points.flat().map(([, v]) => v), 0);
  const y = ticks(0, top > 0 ? top : 1, integer ? Math.min(4, Math.max(1, Math.ceil(top))) : 4);
  const yMax = y.values[y.values.length - 1] < top ? y.values[y.values.length - 1] + y.step : y.values[y.values.length - 1];
  const px = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const py = (v) => T + (1 - v / yMax) * (H - T - B);
  // The x axis in clock time (UTC, as the rest of the page), seconds shown for short spans.
  const xt = clockTicks(t0, t1, 4);
  const clock = (t) => new Date(t).toISOString().slice(11, t1 - t0 < 300e3 ? 19 : 16);
  const lines = series.map((s, i) => {
    // Missing values break the line rather than drawing through them.
    const runs = [[]];
    s.values.forEach((v, k) => {
      if (v === null || v === undefined || Number.isNaN(v)) { if (runs[runs.length - 1].length) runs.push([]); }
      else runs[runs.length - 1].push(`${px(at[k]).toFixed(1)},${py(v).toFixed(1)}`);
    });
    const colour = s.colour || SERIES[i];
    const last = points[i][points[i].length - 1];
    return svg("g", { class: "chart-series", "data-series": s.name },
      runs.filter((r) => r.length).map((r) => svg("polyline", { class: "chart-line", points: r.join(" "), fill: "none",
        stroke: colour, "stroke-width": 1.6, "stroke-dasharray": s.dashed ? "4 3" : "none" })),
      // A value alone between gaps draws no line: a dot shows it.
      runs.filter((r) => r.length === 1).map((r) => {
        const [cx, cy] = r[0].split(",");
        return svg("circle", { class: "chart-dot", cx, cy, r: 2, fill: colour });
      }),
      last ? svg("circle", { cx: px(last[0]), cy: py(last[1]), r: 2.5, fill: colour }) : "");
  });
  return figure(svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
    svg("title", {}, label),
    svg("g", { class: "chart-axis y-axis" },
      y.values.concat(yMax !== y.values[y.values.length - 1] ? [yMax] : []).map((v) => svg("g", {},
        svg("line", { x1: L, y1: py(v), x2: W - R, y2: py(v), stroke: "#e6e9ef" }),
        svg("text", { x: L - 4, y: py(v) + 4, "font-size": 10, "text-anchor": "end", fill: "#5d6677" }, fmt(v))))),
    svg("g", { class: "chart-axis x-axis" },
      svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#5d6677" }),
      xt.values.filter((t) => t >= t0).map((t) => svg("text", { x: px(t), y: H - B + 14, "font-size": 10, "text-anchor": "middle", fill: "#5d6677" }, clock(t))),
      svg("text", { x: W - R, y: H - 4, "font-size": 10, "text-anchor": "end", fill: "#5d6677" }, "time (UTC)")),
    lines));
}

async function chartsView() {
  const [h] = await Promise.all([api("/v1/dashboard/history"), loadNodes()]);
  const samples = h.samples || [];
  const at = samples.map((s) => Number(s.at_ms));
  const col = (k, scale = 1) => samples.map((s) => (s[k] === null || s[k] === undefined ? null : Number(s[k]) * scale));
  const perSecond = (v) => (v >= 10 ? String(Math.round(v)) : String(Math.round(v * 100) / 100));
  const charts = [
    lineChart({ key: "jobs", title: "Jobs started and finished", unit: "per s", at, fmt: perSecond,
      series: [{ name: "started", values: col("jobs_started_per_s") }, { name: "finished", values: col("jobs_finished_per_s") }] }),
    lineChart({ key: "queue", title: "Queue depth", unit: "jobs", at, integer: true, fmt: (v) => String(Math.round(v)),
      series: [{ name: "queued", values: col("queue_depth") }] }),
    lineChart({ key: "queue-wait", title: "Queue wait", unit: "ms", at, fmt: (v) => String(Math.round(v)),
      series: [{ name: "p50", values: col("queue_wait_p50_ms") }, { name: "p99", values: col("queue_wait_p99_ms") }] }),
    lineChart({ key: "committed", title: "Committed writes and fdatasyncs", unit: "per s", at, fmt: perSecond,
      series: [{ name: "committed", values: col("committed_per_s") }, { name: "fdatasyncs", values: col("fsyncs_per_s") }] }),
    lineChart({ key: "fsync", title: "fdatasync p99", unit: "ms", at, fmt: (v) => String(Math.round(v * 100) / 100),
      series: [{ name: "p99", values: col("fsync_p99_us", 1 / 1000) }] }),
  ];
  // One chart per node the samples name, running against its slots.
  const seen = new Map();
  for (const s of samples) for (const n of s.nodes || []) seen.set(String(n.id), n);
  const perNode = [...seen.values()].map((n) => [nameOf(nodeIndex.get(String(n.id))) || n.address || String(n.id), n]).sort(byName)
    .map(([name, n]) => {
      const of = (k) => samples.map((s) => { const m = (s.nodes || []).find((x) => String(x.id) === String(n.id)); return m ? Number(m[k] || 0) : null; });
      return lineChart({ key: `node-${n.id}`, title: `Running on ${name}`, unit: "attempts", at, integer: true, fmt: (v) => String(Math.round(v)),
        series: [{ name: "running", values: of("running") }, { name: "slots", values: of("slots"), dashed: true, colour: "#8892a6" }] });
    });
  view.replaceChildren(el("h2", {}, "Charts of the last hour"),
    el("p", { class: "muted", id: "charts-note" }, samples.length
      ? `${samples.length} sample${samples.length === 1 ? "" : "s"} of this node's measurements, one every ${Math.round(Number(h.sample_ms || 10000) / 1000)} s, the newest ${fromNow(at[at.length - 1])}; redrawn every 10 s.`
      : "No samples yet: the node takes its first a second after it starts, then one every 10 s."),
    el("div", { class: "charts", id: "charts" }, charts),
    el("h2", {}, "Nodes: running and slots"),
    el("div", { class: "charts", id: "node-charts" }, perNode.length ? perNode : el("p", { class: "chart-empty" }, "No samples yet.")));
}

// ---- routing and live updates ----

// Which nav link a path belongs to.
const SECTIONS = [["/workflow", "#/workflows"], ["/job", "#/jobs"], ["/cron", "#/crons"], ["/charts", "#/charts"],
  ["/log", "#/log"], ["", "#/cluster"]];
let poll = null; // the interval of a view that polls instead of following events

async function route() {
  const hash = location.hash || "#/cluster";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const section = SECTIONS.find(([prefix]) => path.startsWith(prefix))[1];
  for (const a of document.querySelectorAll("nav a")) {
    const here = a.getAttribute("href") === section;
    a.classList.toggle("current", here);
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (output && !path.startsWith("/job/")) { output.abort(); output = null; }
  if (poll) { clearInterval(poll); poll = null; }
  notes.clear();
  try {
    if (path.startsWith("/log")) {
      current = { path, render: () => logView(params), concerns: () => !params.get("from") };
    } else if (path.startsWith("/workflows")) {
      current = { path, render: () => workflowsView(params), concerns: (e) => !!e.workflow_id };
    } else if (path.startsWith("/workflow/")) {
      const id = path.slice(10);
      current = { path, render: () => workflowView(id), concerns: (e) => e.workflow_id === id };
    } else if (path.startsWith("/job/")) {
      const id = path.slice(5);
      current = { path, render: () => jobView(id), concerns: (e) => e.job_id === id };
    } else if (path.startsWith("/jobs")) {
      current = { path, render: () => jobsView(params), concerns: (e) => e.kind.startsWith("job_") };
    } else if (path.startsWith("/crons")) {
      // A fire submits a job; the counts and next fire move then, and with the clock.
      current = { path, render: () => cronsView(), concerns: (e) => e.kind === "job_submitted", every: 30000 };
    } else if (path.startsWith("/cron/")) {
      const name = decodeURIComponent(path.slice(6));
      current = { path, render: () => cronView(name, params.get("ns")), concerns: (e) => e.kind === "job_submitted", every: 30000 };
    } else if (path.startsWith("/charts")) {
      current = { path, render: () => chartsView(), concerns: () => false, every: 10000 };
    } else {
      current = { path, render: () => clusterView(),
        concerns: (e) => e.kind.startsWith("node_") || e.kind === "leader_changed" || e.kind.startsWith("job_") };
    }
    if (current.every) poll = setInterval(refresh, current.every);
    await current.render();
  } catch (e) {
    view.replaceChildren(el("p", { class: "error", role: "alert" }, e.message));
  }
}

// An event re-reads only the view it concerns, at most once per 250 ms; not while the
// operator is typing or choosing in one of its fields (that would wipe what they typed),
// but once they leave it.
let pending = null;
function refresh() {
  if (pending) return;
  pending = setTimeout(async () => {
    pending = null;
    const f = document.activeElement;
    if (f && view.contains(f) && /^(INPUT|SELECT|TEXTAREA)$/.test(f.tagName)) {
      f.addEventListener("blur", refresh, { once: true });
      return;
    }
    if (current) await current.render().catch(() => {});
  }, 250);
}
onEvent((e) => { if (current && current.concerns(e)) refresh(); });

window.addEventListener("hashchange", route);
loadNamespaces().finally(() => {
  connectEvents();
  route();
});
