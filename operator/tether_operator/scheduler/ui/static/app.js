// Tether UI: the runs list, a run's timeline, the workflows (with a Start-run form), the
// schedules (trigger, suspend, resume) and the workers page, over the HTTP API.
// Plain JS, no build step: the page's files hold no data; every call carries the
// caller's bearer token (when the scheduler checks one), so it shows what the API lets
// that caller read.
"use strict";

const API = "/v1";
const TOKEN_KEY = "tether.token";
const RUN_POLL_MS = 1000;   // a live run's page: one conditional GET a second (ETag)
const LIST_POLL_MS = 2000;  // the runs list and the workers page
const FOLD_CHARS = 2000;    // input and result longer than this start folded
const TERMINAL = new Set(["Succeeded", "Failed", "Cancelled"]);
const PHASES = ["Pending", "Running", "Succeeded", "Failed", "Cancelled"];

const main = document.getElementById("main");
let timer = null;   // the current page's refresh
let page = 0;       // bumped on every navigation: late answers of an old page are dropped

// ------------------------------------------------------------------ helpers

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

function ago(seconds) {
  if (!seconds) return "";
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "";
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
  if (seconds < 120) return `${seconds.toFixed(2)} s`;
  return `${Math.floor(seconds / 60)}m ${Math.round(seconds % 60)}s`;
}

function clock(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function phase(name, style) {
  return `<span class="phase ${esc(style || name)}" data-phase="${esc(name)}">${esc(name)}</span>`;
}

const WORKER_STYLE = { Ready: "Running", Draining: "Pending", Lost: "Failed" };

function runLink(runId) {
  return `<a href="#/runs/${encodeURIComponent(runId)}">${esc(runId)}</a>`;
}

function errorText(error) {
  if (!error) return "";
  const kind = error.type || error.reason || "Error";
  return `${kind}: ${error.message || ""}`;
}

function folded(label, value) {
  const text = JSON.stringify(value, null, 2) ?? "null";
  const open = text.length <= FOLD_CHARS ? " open" : "";
  const size = text.length > FOLD_CHARS ? ` (${(text.length / 1024).toFixed(1)} KiB, folded)` : "";
  return `<details${open} data-fold="${esc(label)}"><summary>${esc(label)}${size}</summary>` +
    `<pre>${esc(text)}</pre></details>`;
}

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.message || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, etag, sent) {
  const headers = { Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (etag) headers["If-None-Match"] = etag;
  const init = { headers, cache: "no-store" };
  if (sent !== undefined) {
    init.method = "POST";
    init.body = JSON.stringify(sent);
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(API + path, init);
  if (response.status === 304) return { unchanged: true, etag };
  let body = {};
  try {
    body = await response.json();
  } catch (_) {
    body = { message: `HTTP ${response.status} ${response.statusText}` };
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return { body, etag: response.headers.get("ETag") };
}

// The `key` list of GET `path` for page `me`; null when it failed (the error is shown)
// or the page changed meanwhile.
async function fetchList(me, path, key) {
  try {
    const list = (await api(path)).body[key];
    return me === page ? list : null;
  } catch (error) {
    if (me === page) showError(error);
    return null;
  }
}

function showError(error) {
  stopTimer();
  if (error instanceof ApiError && error.status === 401) {
    main.innerHTML = `
      <div class="panel tokenform" data-refusal="401">
        <h2>This scheduler needs a token</h2>
        <p class="err">${esc(error.problem.message)}</p>
        <p>Paste a token Kubernetes accepts for a user allowed to <code>get</code> and
        <code>list</code> <code>workflowruns</code> (apiGroup <code>tether.dev</code>), e.g.
        <code>kubectl create token SA -n NAMESPACE --audience tether.dev/scheduler</code>.
        <code>tether ui --token …</code> opens this page with it. The token stays in this
        tab only (sessionStorage).</p>
        <form id="tokenform"><textarea name="token" required></textarea>
        <button type="submit">Use token</button></form>
      </div>`;
    document.getElementById("tokenform").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, new FormData(event.target).get("token").trim());
      updateSignout();
      route();
    });
    return;
  }
  const status = error instanceof ApiError ? error.status : 0;
  const what = {
    403: "Forbidden",
    404: "Not found",
    503: "The scheduler is not serving yet (a standby, or still recovering): this page retries",
  }[status] || (status ? `HTTP ${status}` : "The scheduler could not be reached");
  main.innerHTML = `<div class="panel error" data-refusal="${status}">
    <h2>${esc(what)}</h2><p>${esc(error.message)}</p></div>`;
  if (status === 503 || status === 0) timer = setTimeout(route, 2000);
}

// ------------------------------------------------------------------ routing

function stopTimer() {
  if (timer !== null) clearTimeout(timer);
  timer = null;
  document.getElementById("live").hidden = true;
}

function updateSignout() {
  const button = document.getElementById("signout");
  button.hidden = !token();
}

function route() {
  stopTimer();
  page += 1;
  const hash = location.hash || "#/runs";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("current", a.dataset.nav === (parts[0] || "runs"));
  }
  if (parts[0] === "workers") return workersPage(page);
  if (parts[0] === "schedules") return schedulesPage(page);
  if (parts[0] === "workflows" && parts.length > 2) {
    return workflowPage(page, decodeURIComponent(parts[1]), decodeURIComponent(parts.slice(2).join("/")));
  }
  if (parts[0] === "workflows") return workflowsPage(page);
  if (parts[0] === "runs" && parts.length > 1) {
    return runPage(page, decodeURIComponent(parts.slice(1).join("/")));
  }
  return runsPage(page, params);
}

function takeTokenFromHash() {
  // `tether ui` opens `/ui/#token=…[&to=/runs/ID]`: keep the token for this tab, then
  // drop it from the URL (and from the history).
  if (!location.hash.startsWith("#token=")) return;
  const params = new URLSearchParams(location.hash.slice(1));
  sessionStorage.setItem(TOKEN_KEY, params.get("token"));
  const to = params.get("to") || "";
  history.replaceState(null, "", location.pathname + "#" + (to.startsWith("/") ? to : "/runs"));
}

// ------------------------------------------------------------------ runs list

const RUN_EMPTY = `
  <div class="panel empty" data-empty="runs">
    <h2>No runs yet</h2>
    <p>Start one and it appears here within two seconds:</p>
    <pre>tether run WORKFLOW --input '{}' --wait        # dev mode, or --server kube
kubectl apply -f run.yaml                         # a WorkflowRun on Kubernetes</pre>
    <p class="muted">The <a href="#/workers">workers page</a> lists the workflows registered.</p>
  </div>`;

const seen = { namespace: new Set(), workflow: new Set() };  // filter choices met so far

async function runsPage(me, params, fresh = true) {
  const query = new URLSearchParams({ view: "summary" });
  for (const key of ["namespace", "workflow", "phase"]) {
    if (params.get(key)) query.set(key, params.get(key));
  }
  let runs, workers;
  try {
    const [answer, known] = await Promise.all([
      api(`/runs?${query}`),
      api("/workers").catch(() => ({ body: { workers: null } })),
    ]);
    runs = answer.body.runs;
    workers = known.body.workers;
  } catch (error) {
    if (me === page) showError(error);
    return;
  }
  if (me !== page) return;
  for (const r of runs) {
    seen.namespace.add(r.namespace);
    seen.workflow.add(r.workflow);
  }
  for (const key of ["namespace", "workflow"]) if (params.get(key)) seen[key].add(params.get(key));
  const filtered = params.get("namespace") || params.get("workflow") || params.get("phase");
  if (fresh || !document.getElementById("filters")) {
    main.innerHTML = `<h1>Runs</h1><div id="no-workers"></div>
      <form class="filters" id="filters"></form><div id="runs"></div>`;
    const form = document.getElementById("filters");
    form.addEventListener("change", () => {
      const next = new URLSearchParams();
      for (const [key, value] of new FormData(form)) if (value) next.set(key, value);
      location.hash = `#/runs${next.toString() ? "?" + next : ""}`;
    });
  }
  renderFilters(params, runs.length);
  document.getElementById("no-workers").innerHTML =
    workers !== null && workers.filter((w) => w.alive).length === 0
      ? `<div class="panel warn" data-empty="no-workers">No live worker has registered with this
         scheduler, so no run can start. In dev mode: <code>tether dev FILE.py --workers 2</code>;
         on Kubernetes: apply a WorkerPool (see the <a href="#/workers">workers page</a>).</div>`
      : "";
  document.getElementById("runs").innerHTML = runs.length === 0
    ? (filtered ? `<p class="panel" data-empty="filter">No runs match these filters.</p>` : RUN_EMPTY)
    : `<table data-table="runs"><thead><tr><th>Name</th><th>Namespace</th><th>Workflow</th>
      <th>Phase</th><th>Worker-Pod</th><th>Progress</th><th>Sticky</th><th>Age</th></tr></thead>
      <tbody>${runs.slice().reverse().map(runRow).join("")}</tbody></table>`;
  timer = setTimeout(() => { if (me === page) runsPage(me, params, false); }, LIST_POLL_MS);
}

function renderFilters(params, count) {
  const form = document.getElementById("filters");
  const choices = { namespace: [...seen.namespace].sort(), workflow: [...seen.workflow].sort(), phase: PHASES };
  const key = JSON.stringify(choices);
  if (form.dataset.choices !== key) {  // rebuilt only when a choice is new: an open list stays open
    form.dataset.choices = key;
    form.innerHTML = Object.entries(choices).map(([name, values]) =>
      `<label>${name}<select name="${name}">${["", ...values].map((v) =>
        `<option value="${esc(v)}"${v === (params.get(name) || "") ? " selected" : ""}>${esc(v || "all")}</option>`,
      ).join("")}</select></label>`).join("") + `<span class="muted" id="count"></span>`;
  }
  document.getElementById("count").textContent = `${count} run${count === 1 ? "" : "s"}`;
}

function runRow(r) {
  return `<tr data-run="${esc(r.run_id)}">
    <td>${runLink(r.run_id)}</td>
    <td>${esc(r.namespace)}</td>
    <td>${esc(r.workflow)}</td>
    <td>${phase(r.phase)}${r.message ? `<div class="muted" data-message>${esc(r.message)}</div>` : ""}
      ${r.error ? `<div class="err">${esc(errorText(r.error))}</div>` : ""}</td>
    <td class="mono">${esc(r.worker || "")}</td>
    <td>${esc(r.progress)}</td>
    <td>${esc(r.sticky || "")}</td>
    <td title="${esc(clock(r.created_at))}">${ago(r.created_at)}</td>
  </tr>`;
}

// ------------------------------------------------------------------ a run's page

async function runPage(me, runId) {
  let etag = null;
  let run = null;
  const tick = async () => {
    let answer;
    try {
      answer = await api(`/runs/${encodeURIComponent(runId)}`, etag);
    } catch (error) {
      if (me === page) showError(error);
      return;
    }
    if (me !== page) return;
    if (!answer.unchanged) {
      run = answer.body;
      etag = answer.etag;
      renderRun(run);
    }
    const live = !TERMINAL.has(run.phase);
    document.getElementById("live").hidden = !live;
    if (live) timer = setTimeout(tick, RUN_POLL_MS);
    else if (!answer.unchanged) drawNow(run); // the last frame: no "now" line
  };
  await tick();
}

function renderRun(run) {
  const open = [...main.querySelectorAll("details[data-fold]")]
    .filter((d) => d.open).map((d) => d.dataset.fold);
  const end = run.finished_at || Date.now() / 1000;
  const done = run.activities.filter((a) => ["Completed", "Failed", "Cancelled"].includes(a.state)).length;
  const attempts = run.activities.reduce((n, a) => n + Math.max(1, a.attempts.length), 0);
  const children = run.children.length
    ? `<h2>Child runs</h2><table data-table="children"><thead><tr><th>Seq</th><th>Run</th><th>Workflow</th><th>Phase</th></tr></thead><tbody>${
      run.children.map((c) => `<tr><td>${c.seq}</td><td>${runLink(c.run_id)}</td><td>${esc(c.workflow)}</td><td>${phase(c.phase)}</td></tr>`).join("")}</tbody></table>`
    : "";
  main.innerHTML = `
    <p><a href="#/runs">← Runs</a></p>
    <h1 data-run-id="${esc(run.run_id)}">${esc(run.run_id)} ${phase(run.phase)}</h1>
    <dl class="facts">
      <dt>Workflow</dt><dd>${esc(run.workflow)}</dd>
      <dt>Workflow pod</dt><dd class="mono">${esc(run.worker || "—")}</dd>
      <dt>Started</dt><dd>${esc(clock(run.created_at))}</dd>
      <dt>Duration</dt><dd>${duration(end - run.created_at)}${run.finished_at ? "" : " so far"}</dd>
      <dt>Progress</dt><dd>${done}/${run.activities.length + run.children.length} steps, ${attempts} attempts</dd>
      ${run.sticky ? `<dt>Sticky</dt><dd>${esc(run.sticky)}</dd>` : ""}
      ${run.parent_run_id ? `<dt>Parent</dt><dd>${runLink(run.parent_run_id)}</dd>` : ""}
    </dl>
    ${run.message ? `<div class="panel warn" data-message>${esc(run.message)}</div>` : ""}
    ${run.error ? `<div class="panel error" data-run-error><b>${esc(run.error.type || "Error")}</b>: ${esc(run.error.message || "")}</div>` : ""}
    <h2>Timeline</h2>
    <div class="legend"><span><i class="Completed"></i>completed</span><span><i class="Failed"></i>failed</span>
      <span><i class="Running"></i>running</span><span><i class="Retrying"></i>lost / retrying</span>
      <span><i class="Cancelled"></i>cancelled</span><span><i class="session"></i>session bound to the pod</span>
      <span><i class="break"></i>session broke</span><span><i class="cold"></i>cold start</span></div>
    <div class="gantt-wrap" id="gantt"></div>
    ${sessionsTable(run)}
    ${children}
    <h2>Activities</h2>
    ${activitiesTable(run)}
    <h2>Input and result</h2>
    ${folded("input", run.input)}
    ${TERMINAL.has(run.phase) && run.phase === "Succeeded" ? folded("result", run.result) : ""}`;
  for (const d of main.querySelectorAll("details[data-fold]")) {
    if (open.includes(d.dataset.fold)) d.open = true;
  }
  drawNow(run);
}

function drawNow(run) {
  const holder = document.getElementById("gantt");
  if (holder) holder.innerHTML = gantt(run, holder.clientWidth || 1100);
}

function sessionsTable(run) {
  if (!run.sessions.length) return "";
  const rows = run.sessions.map((s) => {
    const bindings = s.bindings.map((b, i) => `<div data-binding="${esc(b.pod || b.worker)}">
      ${i ? "rebound to" : "bound to"} <span class="mono">${esc(b.pod || b.worker)}</span>
      ${b.node ? `<span class="muted">on ${esc(b.node)}</span>` : ""}
      at ${duration(b.bound_at - run.created_at)}${b.ended_at ? ` until ${duration(b.ended_at - run.created_at)}` : ""}
      ${b.reason ? `<span class="err">(${esc(b.reason)})</span>` : ""}</div>`).join("");
    const breaks = s.breaks.map((b) => `<div class="err" data-break="${esc(b.reason)}">broke at
      ${duration(b.time - run.created_at)}: ${esc(b.reason)}${b.message ? ` — ${esc(b.message)}` : ""}</div>`).join("");
    return `<tr data-session="${esc(s.id)}"><td class="mono">${esc(s.id)}</td><td>${esc(s.strategy)}</td>
      <td>${phase(s.state)}</td><td>${bindings}${breaks}</td></tr>`;
  }).join("");
  return `<h2>Sessions</h2><table data-table="sessions"><thead><tr><th>Session</th><th>Strategy</th>
    <th>State</th><th>Where it ran</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function activitiesTable(run) {
  if (!run.activities.length) {
    return `<p class="muted" data-empty="activities">No activity scheduled yet.</p>`;
  }
  const rows = run.activities.map((a) => {
    const tries = a.attempts.length ? a.attempts : [a];
    const errors = tries.filter((t) => t.error).map((t) =>
      `<div class="err" data-attempt-error="${a.seq}/${t.attempt}">attempt ${t.attempt}: ${esc(errorText(t.error))}</div>`).join("");
    const took = a.finished_at && a.started_at ? duration(a.finished_at - a.started_at) : "";
    return `<tr data-seq="${a.seq}"><td>${a.seq}</td><td>${esc(a.name)}${a.local ? " <span class=\"muted\">(local)</span>" : ""}</td>
      <td>${phase(a.state)}</td><td>${a.attempt}</td><td class="mono">${esc(a.pod || a.worker || "")}</td>
      <td>${a.cold_start ? "cold" : ""}</td><td>${took}</td><td>${errors}</td></tr>`;
  }).join("");
  return `<table data-table="activities"><thead><tr><th>Seq</th><th>Activity</th><th>State</th><th>Attempts</th>
    <th>Pod</th><th>Start</th><th>Took</th><th>Errors</th></tr></thead><tbody>${rows}</tbody></table>`;
}

// ------------------------------------------------------------------ the timeline (SVG)

const LABEL_W = 190;
const ROW_H = 18;
const LANE_PAD = 6;
const AXIS_H = 22;
const MAX_ROWS = 6;

function gantt(run, width) {
  const t0 = run.created_at;
  const t1 = run.finished_at || Date.now() / 1000;
  const span = Math.max(t1 - t0, 0.001);
  const plotW = Math.max(width - LABEL_W - 16, 200);
  const x = (t) => LABEL_W + ((Math.min(Math.max(t, t0), t1) - t0) / span) * plotW;

  // Every attempt with a start becomes a bar on its pod's lane.
  const podOfWorker = new Map();
  const bars = [];
  for (const a of run.activities) {
    const tries = a.attempts.length ? a.attempts : [{ ...a, attempt: a.attempt }];
    for (const t of tries) {
      if (t.pod || t.worker) podOfWorker.set(t.worker || t.pod, t.pod || t.worker);
      if (t.started_at == null) continue;
      bars.push({ a, t, pod: t.pod || t.worker || "(no pod)", start: t.started_at, end: t.finished_at || t1 });
    }
  }
  for (const s of run.sessions) {
    for (const b of s.bindings) if (b.worker) podOfWorker.set(b.worker, b.pod || b.worker);
  }
  const lanes = new Map();  // pod -> {rows: [lastEnd...], node}
  const lane = (pod, node) => {
    if (!lanes.has(pod)) lanes.set(pod, { rows: [], node: node || "" });
    const found = lanes.get(pod);
    if (node && !found.node) found.node = node;
    return found;
  };
  if (run.worker) lane(podOfWorker.get(run.worker) || run.worker, "");
  for (const s of run.sessions) for (const b of s.bindings) lane(b.pod || b.worker, b.node);
  bars.sort((p, q) => p.start - q.start);
  for (const bar of bars) {
    const l = lane(bar.pod, bar.t.node);
    let row = l.rows.findIndex((end) => end <= bar.start);
    if (row === -1) {
      row = l.rows.length < MAX_ROWS ? l.rows.length : l.rows.length - 1;
      if (row === l.rows.length) l.rows.push(0);
    }
    l.rows[row] = Math.max(l.rows[row], bar.end);
    bar.row = row;
  }
  if (!lanes.size) {
    return `<p class="muted" data-empty="timeline">Nothing ran yet: bars appear here as attempts start.</p>`;
  }
  let y = AXIS_H;
  const top = new Map();
  const out = [];
  let odd = false;
  for (const [pod, l] of lanes) {
    const h = Math.max(1, l.rows.length) * ROW_H + 2 * LANE_PAD + 8;
    top.set(pod, y);
    out.push(`<g data-lane="${esc(pod)}"><rect class="lane-bg${odd ? " odd" : ""}" x="0" y="${y}" width="${LABEL_W + plotW + 16}" height="${h}"/>` +
      `<text class="lane-label" x="8" y="${y + 15}">${esc(short(pod, 28))}<title>${esc(pod)}</title></text>` +
      `<text class="lane-node" x="8" y="${y + 29}">${esc(l.node)}${pod === (podOfWorker.get(run.worker) || run.worker) ? " · workflow" : ""}</text></g>`);
    y += h;
    odd = !odd;
  }
  const height = y + 4;
  const svgW = LABEL_W + plotW + 16;
  const parts = [`<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="${svgW}" height="${height}" data-span="${span}">`];
  parts.push(...out);
  for (const [t, label] of ticks(span)) {
    const tx = LABEL_W + (t / span) * plotW;
    parts.push(`<line class="tick" x1="${tx}" x2="${tx}" y1="${AXIS_H - 4}" y2="${height}"/>` +
      `<text class="tick-label" x="${tx + 2}" y="${AXIS_H - 8}">${label}</text>`);
  }
  // Sessions: the span each was bound to a pod, behind the bars.
  for (const s of run.sessions) {
    for (const b of s.bindings) {
      const pod = b.pod || b.worker;
      const ly = top.get(pod);
      if (ly == null) continue;
      const bx = x(b.bound_at);
      const bw = Math.max(2, x(b.ended_at || t1) - bx);
      parts.push(`<g data-binding-pod="${esc(pod)}" data-session="${esc(s.id)}"><rect class="binding" x="${bx}" y="${ly + 2}" width="${bw}" height="${laneHeight(top, pod, height) - 4}"/>` +
        `<rect class="binding-edge" x="${bx}" y="${ly + 2}" width="${bw}" height="3"/>` +
        `<title>session ${esc(s.id)} bound to ${esc(pod)} from ${duration(b.bound_at - t0)}` +
        `${b.ended_at ? ` to ${duration(b.ended_at - t0)}` : ""}${b.reason ? ` (${esc(b.reason)})` : ""}</title></g>`);
    }
  }
  for (const bar of bars) {
    const ly = top.get(bar.pod) + LANE_PAD + 4 + bar.row * ROW_H;
    const bx = x(bar.start);
    const bw = Math.max(2, x(bar.end) - bx);
    const state = bar.t.state || bar.a.state;
    const label = `${bar.a.name}${bar.t.attempt > 1 ? ` #${bar.t.attempt}` : ""}`;
    const tip = `${bar.a.name} (seq ${bar.a.seq}) attempt ${bar.t.attempt} on ${bar.pod}: ${state}, ` +
      `${duration(bar.end - bar.start)}${bar.t.cold_start ? ", cold start" : ""}` +
      `${bar.t.error ? ` — ${errorText(bar.t.error)}` : ""}`;
    parts.push(`<g data-activity="${esc(bar.a.name)}" data-seq="${bar.a.seq}" data-attempt="${bar.t.attempt}" data-pod="${esc(bar.pod)}" data-state="${esc(state)}">` +
      `<rect class="bar ${esc(state)}" x="${bx}" y="${ly}" width="${bw}" height="${ROW_H - 4}" rx="2"/>` +
      (bar.t.cold_start ? `<rect class="cold" data-cold="1" x="${bx}" y="${ly}" width="${Math.min(4, bw)}" height="${ROW_H - 4}"/>` : "") +
      (bw > 60 ? `<text class="bar-label" x="${bx + 6}" y="${ly + 11}">${esc(short(label, Math.floor(bw / 7)))}</text>` : "") +
      `<title>${esc(tip)}</title></g>`);
  }
  // Breaks: a red line where a session lost its pod, with the reason.
  for (const s of run.sessions) {
    for (const b of s.breaks) {
      const pod = podOfWorker.get(b.worker) || b.worker;
      const ly = top.get(pod);
      if (ly == null) continue;
      const bx = x(b.time);
      parts.push(`<g data-break-reason="${esc(b.reason)}" data-break-pod="${esc(pod)}">` +
        `<line class="break" x1="${bx}" x2="${bx}" y1="${ly}" y2="${ly + laneHeight(top, pod, height)}"/>` +
        `<text class="break-label" x="${Math.min(bx + 3, svgW - 90)}" y="${ly + 12}">${esc(b.reason)}</text>` +
        `<title>session ${esc(s.id)} broke: ${esc(b.reason)}${b.message ? ` — ${esc(b.message)}` : ""}</title></g>`);
    }
  }
  if (!run.finished_at) {
    parts.push(`<line class="now" x1="${LABEL_W + plotW}" x2="${LABEL_W + plotW}" y1="${AXIS_H - 4}" y2="${height}"/>`);
  }
  parts.push("</svg>");
  return parts.join("");
}

function laneHeight(top, pod, height) {
  const ys = [...top.values()].sort((p, q) => p - q);
  const y = top.get(pod);
  const next = ys.find((v) => v > y);
  return (next ?? height - 4) - y;
}

function ticks(span) {
  const steps = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60,
    120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  const step = steps.find((s) => span / s <= 10) || 86400;
  const out = [];
  for (let t = 0; t <= span + 1e-9; t += step) out.push([t, duration(t) || "0"]);
  return out;
}

function short(text, max) {
  text = String(text);
  return text.length > max ? text.slice(0, Math.max(1, max - 1)) + "…" : text;
}

// ------------------------------------------------------------------ workers page

async function workersPage(me) {
  const workers = await fetchList(me, "/workers", "workers");
  if (workers === null) return;
  if (!workers.length) {
    main.innerHTML = `<h1>Workers</h1><div class="panel empty" data-empty="workers">
      <h2>No workers have registered</h2>
      <p>Runs wait (<code>Pending</code>) until a worker registers their workflow.</p>
      <pre>tether dev FILE.py --workers 2                 # dev mode: workers in processes
kubectl apply -f examples/k8s/ml-inference.yaml # Kubernetes: a WorkerPool's pods</pre></div>`;
  } else {
    const pools = new Map();
    for (const w of workers) {
      // On Kubernetes a pool id is `namespace.name`: show the WorkerPool's name.
      const ns = w.namespace || "-";
      const name = w.pool.startsWith(`${ns}.`) ? w.pool.slice(ns.length + 1) : w.pool;
      const key = `${ns}/${name || "(no pool)"}`;
      if (!pools.has(key)) pools.set(key, []);
      pools.get(key).push(w);
    }
    const sections = [...pools].sort().map(([key, ws]) => {
      const alive = ws.filter((w) => w.alive);
      const busy = alive.reduce((n, w) => n + w.running, 0);
      const slots = alive.reduce((n, w) => n + w.slots, 0);
      ws.sort((p, q) => (q.alive - p.alive) || p.pod.localeCompare(q.pod));  // live first
      const rows = ws.map((w) => {
        const state = !w.alive ? "Lost" : w.draining ? "Draining" : "Ready";
        return `<tr data-worker="${esc(w.worker_id)}"><td class="mono">${esc(w.pod)}</td><td>${esc(w.node)}</td>
          <td>${phase(state, WORKER_STYLE[state])}
          ${w.lost_reason ? `<span class="muted">${esc(w.lost_reason)}</span>` : ""}</td>
          <td><span class="bar-cell"><span data-fill="${w.slots ? w.running / w.slots : 0}"></span></span>${w.running}/${w.slots}</td>
          <td>${w.sessions.length}/${w.session_capacity}<div class="muted mono">${w.sessions.map(esc).join("<br>")}</div></td>
          <td>${esc(w.workflows.join(", "))}<div class="muted">${esc(w.activities.join(", "))}</div></td></tr>`;
      }).join("");
      return `<h2 data-pool="${esc(key)}">${esc(key)} <span class="muted">— ${alive.length} live worker${alive.length === 1 ? "" : "s"},
        ${busy}/${slots} slots busy</span></h2><table data-table="workers"><thead><tr><th>Pod</th><th>Node</th><th>State</th>
        <th>Slots busy</th><th>Sessions held</th><th>Workflows / activities</th></tr></thead><tbody>${rows}</tbody></table>`;
    }).join("");
    main.innerHTML = `<h1>Workers</h1>${sections}`;
    for (const fill of main.querySelectorAll("[data-fill]")) {
      fill.style.width = `${Math.round(Number(fill.dataset.fill) * 100)}%`;
    }
  }
  timer = setTimeout(() => { if (me === page) workersPage(me); }, LIST_POLL_MS);
}

// ------------------------------------------------------------------ workflows

function workflowHref(wf) {
  return `#/workflows/${encodeURIComponent(wf.namespace || "-")}/${encodeURIComponent(wf.name)}`;
}

async function workflowsPage(me) {
  const workflows = await fetchList(me, "/workflows", "workflows");
  if (workflows === null) return;
  main.innerHTML = workflows.length === 0
    ? `<h1>Workflows</h1><div class="panel empty" data-empty="workflows">
        <h2>No workflow is registered</h2>
        <p>A workflow appears here once a worker that defines it registers:</p>
        <pre>tether dev FILE.py --workers 2                 # dev mode
kubectl apply -f examples/k8s/ml-inference.yaml # Kubernetes: a WorkerPool's pods</pre></div>`
    : `<h1>Workflows</h1><table data-table="workflows"><thead><tr><th>Name</th><th>Namespace</th>
        <th>Sticky</th><th>Parameters</th><th>Schedules</th><th>Live workers</th></tr></thead><tbody>${
        workflows.map((wf) => `<tr data-workflow="${esc(wf.name)}">
          <td><a href="${workflowHref(wf)}">${esc(wf.name)}</a></td><td>${esc(wf.namespace)}</td>
          <td>${esc(wf.sticky || "")}</td>
          <td class="mono">${esc(Object.keys((wf.input_schema || {}).properties || {}).join(", "))}</td>
          <td class="mono">${esc((wf.schedules || []).join("; "))}</td>
          <td>${wf.workers.length}</td></tr>`).join("")}</tbody></table>`;
  timer = setTimeout(() => { if (me === page) workflowsPage(me); }, LIST_POLL_MS * 5);
}

// A form field per entrypoint parameter, from the JSON Schema the workers registered.
// Plain types get inputs the browser checks (required, number ranges, patterns, enums);
// anything else is JSON in a textarea, parsed before sending. The server checks again.
function fieldKind(schema) {
  if (Array.isArray(schema.enum) && schema.enum.every((v) => typeof v === "string")) return "enum";
  return { string: "string", integer: "integer", number: "number", boolean: "boolean" }[schema.type] || "json";
}

function formField(name, schema, required) {
  const kind = fieldKind(schema);
  const id = `field-${name}`;
  const has = Object.prototype.hasOwnProperty.call(schema, "default");
  const label = `<label for="${esc(id)}">${esc(name)}${required ? ' <span class="err">*</span>' : ""}
    <span class="muted">${esc(kind === "json" ? "JSON" : kind)}${schema.description ? " — " + esc(schema.description) : ""}</span></label>`;
  const common = `id="${esc(id)}" name="${esc(name)}" data-kind="${kind}"${required ? " required" : ""}`;
  if (kind === "boolean") {
    return `<div class="field check"><input type="checkbox" ${common.replace(" required", "")}${has && schema.default ? " checked" : ""}>${label}</div>`;
  }
  let control;
  if (kind === "enum") {
    control = `<select ${common}>${required ? "" : '<option value=""></option>'}${schema.enum.map((v) =>
      `<option${has && v === schema.default ? " selected" : ""}>${esc(v)}</option>`).join("")}</select>`;
  } else if (kind === "json") {
    const value = has ? JSON.stringify(schema.default) : "";
    control = `<textarea ${common} placeholder="${esc(schema.type ? `a JSON ${schema.type}` : "JSON")}">${esc(value)}</textarea>`;
  } else {
    const number = kind === "integer" || kind === "number";
    const limits = [
      number && "minimum" in schema ? ` min="${esc(schema.minimum)}"` : "",
      number && "maximum" in schema ? ` max="${esc(schema.maximum)}"` : "",
      kind === "integer" ? ' step="1"' : number ? ' step="any"' : "",
      kind === "string" && schema.pattern ? ` pattern="${esc(schema.pattern)}"` : "",
      kind === "string" && "minLength" in schema ? ` minlength="${esc(schema.minLength)}"` : "",
      kind === "string" && "maxLength" in schema ? ` maxlength="${esc(schema.maxLength)}"` : "",
    ].join("");
    control = `<input type="${number ? "number" : "text"}" ${common}${limits}${has ? ` value="${esc(schema.default)}"` : ""}>`;
  }
  return `<div class="field">${label}${control}</div>`;
}

function startForm(wf) {
  const schema = wf.input_schema;
  const keywords = schema && schema.type === "object" && schema.properties &&
    !(schema["x-tether-positional-only"] || []).length;
  const required = new Set((schema && schema.required) || []);
  const fields = keywords
    ? Object.entries(schema.properties).map(([name, sub]) => formField(name, sub, required.has(name))).join("")
    : `<div class="field"><label for="field-input">input <span class="muted">JSON, any value</span></label>
       <textarea id="field-input" name="input" data-kind="json" data-whole="true"></textarea></div>`;
  return `<form id="startform" data-form="start" class="panel startform">
    <h2>Start a run</h2>${fields}
    <button type="submit">Start run</button>
    <p class="err" id="form-error" data-form-error hidden></p></form>`;
}

function formInput(form) {
  const input = {};
  let whole;
  for (const el of form.querySelectorAll("[data-kind]")) {
    const kind = el.dataset.kind;
    if (kind === "boolean") { input[el.name] = el.checked; continue; }
    if (el.value === "") continue;  // left empty: the parameter's default
    if (kind === "integer" || kind === "number") input[el.name] = Number(el.value);
    else if (kind === "json") {
      const value = JSON.parse(el.value);
      if (el.dataset.whole) whole = { value };
      else input[el.name] = value;
    } else input[el.name] = el.value;
  }
  return whole ? whole.value : input;
}

async function workflowPage(me, namespace, name) {
  const workflows = await fetchList(me, "/workflows", "workflows");
  if (workflows === null) return;
  const wf = workflows.find((w) => w.name === name && (w.namespace || "-") === namespace);
  if (!wf) {
    main.innerHTML = `<div class="panel error" data-refusal="404"><h2>Not found</h2>
      <p>No workflow ${esc(name)} is registered in namespace ${esc(namespace)}.</p></div>`;
    return;
  }
  main.innerHTML = `<h1>${esc(wf.name)}</h1>
    <dl class="facts"><dt>Namespace</dt><dd>${esc(wf.namespace)}</dd>
      <dt>Sticky</dt><dd>${esc(wf.sticky || "none")}</dd>
      <dt>Live workers</dt><dd class="mono">${esc(wf.workers.join(", ") || "none: a run waits")}</dd>
      <dt>Schedules</dt><dd class="mono">${esc((wf.schedules || []).join("; ") || "none in code")}
        — <a href="#/schedules">schedules</a></dd>
      <dt>Runs</dt><dd><a href="#/runs?workflow=${encodeURIComponent(wf.name)}">its runs</a></dd></dl>
    ${startForm(wf)}`;
  const form = document.getElementById("startform");
  for (const area of form.querySelectorAll("textarea[data-kind=json]")) {
    area.addEventListener("input", () => {
      try {
        if (area.value.trim()) JSON.parse(area.value);
        area.setCustomValidity("");
      } catch (error) {
        area.setCustomValidity(`not JSON: ${error.message}`);
      }
    });
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const shown = document.getElementById("form-error");
    shown.hidden = true;
    if (!form.reportValidity()) return;
    const body = { workflow: wf.name, input: formInput(form) };
    if (wf.namespace) body.namespace = wf.namespace;
    try {
      const run = (await api("/runs", null, body)).body;
      location.hash = `#/runs/${encodeURIComponent(run.run_id)}`;
    } catch (error) {
      const problem = error.problem || {};
      shown.textContent = problem.field ? `${problem.field}: ${error.message}` : error.message;
      shown.dataset.status = String(error.status || 0);
      shown.hidden = false;
    }
  });
}

// ------------------------------------------------------------------ schedules

async function schedulesPage(me, notice = "") {
  const schedules = await fetchList(me, "/schedules", "schedules");
  if (schedules === null) return;
  const rows = schedules.map((s) => {
    const key = `data-ns="${esc(s.namespace)}" data-name="${esc(s.name)}"`;
    return `<tr data-schedule="${esc(s.name)}" data-suspended="${s.suspend}">
      <td>${esc(s.name)}</td><td>${esc(s.namespace)}</td>
      <td class="mono">${esc(s.schedules.join("; "))}${s.time_zone !== "UTC" ? ` <span class="muted">${esc(s.time_zone)}</span>` : ""}</td>
      <td>${esc(s.workflow)}</td><td>${s.suspend ? phase("Suspended", "Pending") : ""}</td>
      <td>${s.active.length}</td>
      <td>${s.last_run_id ? runLink(s.last_run_id) : ""}
        ${s.last_run_phase ? phase(s.last_run_phase) : ""}</td>
      <td>${esc(s.next_schedule_time || "")}${s.message ? `<div class="err">${esc(s.message)}</div>` : ""}</td>
      <td class="actions"><button type="button" data-action="trigger" ${key}>Trigger</button>
        <button type="button" data-action="${s.suspend ? "resume" : "suspend"}" ${key}>${s.suspend ? "Resume" : "Suspend"}</button></td>
    </tr>`;
  }).join("");
  main.innerHTML = `<h1>Schedules</h1><div id="notice">${notice}</div>${schedules.length === 0
    ? `<div class="panel empty" data-empty="schedules"><h2>No schedules</h2>
       <p>On Kubernetes, apply a WorkflowSchedule (<code>kubectl apply -f examples/k8s/nightly-report.yaml</code>);
       in dev mode, declare one in code: <code>@workflows.workflow.define(schedule="*/5 * * * *")</code>.</p></div>`
    : `<table data-table="schedules"><thead><tr><th>Name</th><th>Namespace</th><th>Schedule</th>
       <th>Workflow</th><th>Suspend</th><th>Active</th><th>Last run</th><th>Next</th><th></th></tr></thead>
       <tbody>${rows}</tbody></table>`}`;
  for (const button of main.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => scheduleAction(me, button));
  }
  timer = setTimeout(() => { if (me === page) schedulesPage(me, document.getElementById("notice").innerHTML); }, LIST_POLL_MS);
}

async function scheduleAction(me, button) {
  const { action, ns, name } = button.dataset;
  button.disabled = true;
  let notice;
  try {
    const answer = (await api(`/schedules/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/${action}`, null, {})).body;
    notice = action === "trigger"
      ? `<p class="panel" data-notice="triggered">${esc(name)} triggered: run ${runLink(answer.run_id)} started.</p>`
      : `<p class="panel" data-notice="${action}">${esc(name)} ${action === "suspend" ? "suspended" : "resumed"}.</p>`;
  } catch (error) {
    notice = `<p class="panel error" data-notice="refused" data-status="${error.status || 0}">${esc(error.message)}</p>`;
  }
  if (me !== page) return;
  stopTimer();
  schedulesPage(me, notice);
}

// ------------------------------------------------------------------ start

document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  updateSignout();
  route();
});
window.addEventListener("hashchange", route);
takeTokenFromHash();
updateSignout();
route();
