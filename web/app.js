// The Herald dashboard: tasks, agents, approvals and executions, live.
//
// State is loaded once over HTTP; each live channel then resumes after the
// highest `last_seq` of what was loaded, so nothing between the load and the
// subscription is lost. Events only mark entries dirty; one
// requestAnimationFrame renders every dirty entry of every collection, so a
// burst of events over 1,000 rows costs one layout.
//
// Everything a signed-in session holds lives in one `Dashboard`; signing out
// (or in again) throws it away whole, so no late answer of an old session can
// touch the page of a new one.

import { HeraldClient, decodeToken } from "/herald-client.js";

const TOKEN_KEY = "herald.token";
const MAX_TASKS = 1000; // the API's largest page
const MAX_WATCHED_EXECUTIONS = 20; // each one is a subscription; Herald allows 100 per connection
const RECENT_EXECUTIONS = 10; // shown after a reload, with their event logs
const DECIDED_APPROVALS = 50; // recent decisions shown after a reload
const MAX_LOG_ENTRIES = 500;
// A person pastes the new token: ask well before the old one runs out (the
// client caps this at half the token's lifetime).
const REFRESH_LEAD_SECONDS = 300;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function pretty(v) {
  if (typeof v === "string") {
    try {
      return JSON.stringify(JSON.parse(v), null, 2);
    } catch {
      return v;
    }
  }
  return JSON.stringify(v, null, 2) ?? "";
}

// ---- time -------------------------------------------------------------------

/** "4 m 12 s", "2 h 5 m", "800 ms". */
function span(ms) {
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.round(abs)} ms`;
  const s = Math.floor(abs / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function ago(ms) {
  return ms < 1000 ? "just now" : `${span(ms)} ago`;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/**
 * A <time> the ticker keeps current: `ago` ("3 s ago") or `countdown`
 * (`${prefix} in 4 m 12 s`, then `${late}` once the moment has passed).
 */
function liveTime(at, kind, { prefix = "", late = "" } = {}) {
  const date = new Date(at);
  const t = el("time", { datetime: date.toISOString(), title: date.toLocaleString(), "data-live": kind });
  if (prefix) t.dataset.prefix = prefix;
  if (late) t.dataset.late = late;
  tick(t, Date.now());
  return t;
}

function tick(t, now) {
  const at = Date.parse(t.getAttribute("datetime"));
  if (t.dataset.live === "ago") return setText(t, ago(now - at));
  const left = at - now;
  setText(t, left > 0 ? `${t.dataset.prefix} in ${span(left)}` : t.dataset.late);
}

// ---- a line diff for edited arguments -----------------------------------------

/** The lines of `before` and `after` as [" " | "-" | "+", line], by longest common subsequence. */
function diffLines(before, after) {
  const a = before.split("\n");
  const b = after.split("\n");
  const n = a.length;
  const m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push([" ", a[i++]]);
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push(["-", a[i++]]);
    else out.push(["+", b[j++]]);
  }
  while (i < n) out.push(["-", a[i++]]);
  while (j < m) out.push(["+", b[j++]]);
  return out;
}

function diffView(before, after) {
  const pre = el("pre", { class: "diff", "aria-label": "Arguments before and after the edit" });
  for (const [mark, line] of diffLines(pretty(before), pretty(after))) {
    const tag = mark === "-" ? "del" : mark === "+" ? "ins" : "span";
    pre.append(el(tag, { text: `${mark} ${line}\n` }));
  }
  return pre;
}

// ---- labels -------------------------------------------------------------------

const STATUS_LABEL = {
  pending: "pending",
  in_progress: "running",
  completed: "completed",
  failed: "failed",
  cancelled: "cancelled",
};

const DECISION_LABEL = { approve: "Approved", reject: "Rejected", edit: "Edited and approved", respond: "Answered" };
const DEADLINE_VERB = {
  approve: "approves automatically",
  reject: "rejects automatically",
  edit: "decides automatically",
  respond: "answers automatically",
};

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** What a task row says after its bar: the failure, the result or the last step. */
function taskDetail(t) {
  if (t.status === "failed") return [t.step, t.tool, `error: ${t.error || t.message || "failed"}`];
  if (t.status === "completed") return [t.result ? `result: ${t.result}` : "completed"];
  if (t.status === "cancelled") return [t.message || "cancelled"];
  return [t.step, t.tool, t.message];
}

// ---- collections --------------------------------------------------------------

/**
 * A keyed set of entries, each with its DOM node, rendered in the next frame
 * when marked dirty. New entries go on top (`prepend`, live arrivals) or at
 * the bottom (`append`, pages loaded newest first).
 */
class Collection {
  constructor(containerId, render, onRendered = () => {}) {
    this.containerId = containerId;
    this.render = render;
    this.onRendered = onRendered;
    this.entries = new Map();
    this.dirty = new Set();
    this.placing = [];
  }

  get(id) {
    return this.entries.get(id);
  }

  get size() {
    return this.entries.size;
  }

  add(id, entry, place = "prepend") {
    this.entries.set(id, entry);
    this.placing.push([place, entry]);
    this.dirty.add(id);
    return entry;
  }

  mark(id) {
    this.dirty.add(id);
  }

  remove(id) {
    this.entries.get(id)?.node.remove();
    this.entries.delete(id);
  }

  flush(visible) {
    if (!this.dirty.size && !this.placing.length) return;
    for (const id of this.dirty) {
      const entry = this.entries.get(id);
      if (!entry) continue;
      this.render(entry);
      entry.node.hidden = !visible(entry);
    }
    this.dirty.clear();
    const top = document.createDocumentFragment();
    const bottom = document.createDocumentFragment();
    // Of those put on top, the last added ends up first.
    for (let i = this.placing.length - 1; i >= 0; i--) {
      const [place, entry] = this.placing[i];
      if (place === "prepend") top.append(entry.node);
    }
    for (const [place, entry] of this.placing) if (place === "append") bottom.append(entry.node);
    this.placing = [];
    const container = $(this.containerId);
    container.prepend(top);
    container.append(bottom);
    this.onRendered(this);
  }

  refilter(visible) {
    for (const entry of this.entries.values()) entry.node.hidden = !visible(entry);
  }
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---- one signed-in session ------------------------------------------------------

class Dashboard {
  constructor(token) {
    this.token = token;
    this.client = null;
    this.closed = false;
    this.frame = 0;
    this.seqs = {}; // channel → seqs delivered to this page, in order (for tests and troubleshooting)
    this.tokenRefreshes = 0;
    this.pendingToken = null; // {resolve} while the page waits for a pasted token
    this.filter = "";
    this.tasks = new Collection("tasks", (e) => this.renderTask(e), (c) => {
      $("tasks-empty").hidden = c.size > 0;
      const shown = this.filter ? [...c.entries.values()].filter((e) => !e.node.hidden).length : c.size;
      setText($("tasks-count"), !c.size ? "" : shown === c.size ? `(${c.size})` : `(${shown} of ${c.size} shown)`);
    });
    this.agents = new Collection("agents", (e) => this.renderAgent(e), (c) => {
      $("agents-empty").hidden = c.size > 0;
    });
    this.approvals = new Collection("approvals", (e) => this.renderApproval(e), (c) => {
      const waiting = [...c.entries.values()].filter((e) => !e.a.decision).length;
      $("approvals-empty").hidden = c.size > 0;
      setText($("approvals-count"), waiting ? `(${waiting} waiting)` : "");
    });
    this.executions = new Collection("executions", (e) => this.renderExecution(e), (c) => {
      $("executions-empty").hidden = c.size > 0;
    });
    this.collections = [this.tasks, this.agents, this.approvals, this.executions];
    // Countdowns and "3 s ago" stay true without any event.
    this.ticker = setInterval(() => this.tickAll(), 1000);
  }

  // ---- plumbing ----

  schedule() {
    if (!this.frame && !this.closed) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    if (this.closed) return;
    const visible = (entry) => this.matches(entry);
    for (const c of this.collections) c.flush(visible);
    $("herald-debug").dataset.seqs = JSON.stringify(this.seqs);
  }

  record(ev) {
    (this.seqs[ev.channel] ??= []).push(ev.seq);
  }

  async api(path) {
    const resp = await fetch(path, { headers: { authorization: `Bearer ${this.token}` }, cache: "no-store" });
    const body = await resp.json().catch(() => null);
    if (!resp.ok) throw new HttpError(resp.status, body?.error?.message || `HTTP ${resp.status}`);
    return body;
  }

  tickAll() {
    const now = Date.now();
    for (const t of document.querySelectorAll("time[data-live]")) tick(t, now);
  }

  close() {
    this.closed = true;
    clearInterval(this.ticker);
    cancelAnimationFrame(this.frame);
    this.client?.close();
    this.pendingToken?.reject(new Error("signed out"));
    $("refresh-form").hidden = true;
    for (const id of ["tasks", "agents", "approvals", "executions", "agent-ids"]) $(id).replaceChildren();
    $("herald-debug").dataset.seqs = "{}";
  }

  // ---- filter ----

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    const visible = (entry) => this.matches(entry);
    for (const c of this.collections) c.refilter(visible);
    for (const entry of this.tasks.entries.values()) {
      if (entry.timeline) entry.timeline.hidden = entry.node.hidden;
    }
    this.tasks.onRendered(this.tasks);
  }

  matches(entry) {
    if (!this.filter) return true;
    return entry.haystack().toLowerCase().includes(this.filter);
  }

  // ---- loading ----

  /** Loads the current state over HTTP; throws HttpError when Herald refuses. */
  async load() {
    // In this order: each channel resumes after what its own load saw, and
    // approvals (loaded last) after the highest seq of all.
    const t = await this.api(`/api/v1/tasks?limit=${MAX_TASKS}`);
    const a = await this.api("/api/v1/agents");
    const x = await this.api(`/api/v1/executions?limit=${RECENT_EXECUTIONS}`);
    // Pending before decided: one decided in between is then in the second
    // list, and the decided copy wins (see start).
    const pending = await this.api("/api/v1/approvals?status=pending");
    const decided = await this.api(`/api/v1/approvals?status=decided&limit=${DECIDED_APPROVALS}`);
    return {
      tasks: t.tasks || [],
      agents: a.agents || [],
      executions: x.executions || [],
      decided: decided.approvals || [],
      pending: pending.approvals || [],
    };
  }

  start(loaded) {
    const maxSeq = (list) => list.reduce((m, x) => Math.max(m, x.last_seq || 0), 0);
    const taskCursor = maxSeq(loaded.tasks);
    const agentCursor = maxSeq(loaded.agents);
    const approvalCursor = Math.max(taskCursor, agentCursor, maxSeq(loaded.decided), maxSeq(loaded.pending));

    this.client = new HeraldClient({
      token: this.token,
      autoConnect: false,
      getToken: () => this.askForToken(),
      refreshLeadSeconds: REFRESH_LEAD_SECONDS,
      onStateChange: (s) => this.showConnection(s),
    });
    this.client.on("token", (token) => {
      this.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
    });
    this.client.on("frame", (f) => {
      if (f.type !== "token_refreshed") return;
      this.tokenRefreshes += 1;
      $("herald-debug").dataset.tokenRefreshes = String(this.tokenRefreshes);
      $("refresh-form").hidden = true;
    });
    this.client.on("error", (e) => {
      if (e.code === "token_refresh_failed" || !$("refresh-form").hidden) showError("refresh-error", e.message);
    });

    // The API answers newest first: append in that order.
    for (const t of loaded.tasks) this.addTask(t, "append");
    for (const a of loaded.agents) this.upsertAgent(a);
    const decidedIds = new Set(loaded.decided.map((a) => a.id));
    for (const a of loaded.pending) if (!decidedIds.has(a.id)) this.addApproval(a, "append");
    for (const a of loaded.decided) this.addApproval(a, "append");
    for (const x of loaded.executions) this.watchExecution(x.id, { agentId: x.agent_id, place: "append" });
    for (const a of loaded.pending) this.watchExecution(a.execution_id, {});
    this.client.subscribe("task_updates", { afterSeq: taskCursor, onEvent: (ev) => this.onTaskEvent(ev) });
    this.client.subscribe("agent_status", { afterSeq: agentCursor, onEvent: (ev) => this.onAgentEvent(ev) });
    this.client.subscribe("approvals", { afterSeq: approvalCursor, onEvent: (ev) => this.onApprovalEvent(ev) });
    this.client.connect();
    for (const c of this.collections) c.onRendered(c);
    this.schedule();
  }

  showConnection({ state, attempt, error, cause }) {
    if (this.closed) return;
    const p = $("connection");
    p.dataset.state = state;
    p.dataset.attempt = String(attempt ?? 0);
    const why = cause === "down" ? "; Herald is unreachable" : cause === "unknown" ? "; Herald refused the socket" : "";
    const text = {
      connecting: "Connecting…",
      open: "Live",
      reconnecting: `Reconnecting${attempt ? ` (attempt ${attempt}${why})` : ""}…`,
      closed: error ? "Disconnected" : "Not connected",
    }[state];
    setText($("connection-text"), text);
    if (state === "closed" && error) {
      // The client gave up for good (token refused or expired): ask for a new one.
      showLogin(`${error.message}. Paste a new token to continue.`);
    }
  }

  // ---- token refresh ----

  /** The client's getToken: shows the banner and waits for a person to paste a token. */
  askForToken() {
    if (this.pendingToken) return this.pendingToken.promise;
    const exp = decodeToken(this.token)?.exp;
    const banner = $("refresh-form");
    const when = $("refresh-when");
    when.replaceChildren(
      typeof exp === "number"
        ? liveTime(exp * 1000, "countdown", { prefix: "Your token expires", late: "Your token has expired" })
        : "Your token is about to expire",
    );
    showError("refresh-error", "");
    banner.hidden = false;
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.pendingToken = { promise, resolve, reject };
    return promise;
  }

  /** A token pasted into the banner: handed to the client, which tells Herald on the open socket. */
  usePastedToken(candidate) {
    const claims = decodeToken(candidate);
    if (!claims) return showError("refresh-error", "That is not a Herald token.");
    if (typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
      return showError("refresh-error", "That token has expired already.");
    }
    showError("refresh-error", "");
    $("refresh-token").value = "";
    const waiting = this.pendingToken;
    this.pendingToken = null;
    if (waiting) waiting.resolve(candidate);
    else this.client?.setToken(candidate);
  }

  // ---- tasks ----

  addTask(t, place) {
    const toggle = el("button", { type: "button", class: "link", "data-action": "timeline", "aria-expanded": "false" });
    const title = el("th", { scope: "row" }, toggle);
    const status = el("span", { class: "status" });
    const bar = el("progress", { max: 100, value: 0 });
    const pct = el("span", { class: "pct" });
    const detail = el("span", { class: "detail" });
    const node = el(
      "tr",
      { "data-task-id": t.id },
      title,
      el("td", {}, status),
      el("td", {}, bar, " ", pct),
      el("td", {}, detail),
    );
    const entry = {
      t,
      node,
      cells: { toggle, status, bar, pct, detail },
      timeline: null,
      haystack: () => [t.id, t.title, t.description, t.status, ...taskDetail(t)].join(" "),
    };
    toggle.addEventListener("click", () => this.toggleTimeline(entry));
    return this.tasks.add(t.id, entry, place);
  }

  renderTask(entry) {
    const { t, node, cells } = entry;
    setText(cells.toggle, t.title || t.id);
    cells.toggle.title = t.description || "Show the progress timeline";
    setText(cells.status, STATUS_LABEL[t.status] || t.status);
    node.dataset.status = t.status;
    node.dataset.progress = String(t.progress);
    if (cells.bar.value !== t.progress) cells.bar.value = t.progress;
    cells.bar.setAttribute("aria-label", `${t.title || t.id}: ${t.progress}%`);
    setText(cells.pct, `${t.progress}%`);
    setText(cells.detail, taskDetail(t).filter(Boolean).join(" · "));
    if (entry.timeline && entry.timelineStale) this.loadTimeline(entry);
  }

  onTaskEvent(ev) {
    this.record(ev);
    const d = ev.data;
    let entry = this.tasks.get(d.task_id);
    if (entry && ev.seq <= entry.t.last_seq) return; // already in what HTTP returned
    if (!entry) {
      const t = { id: d.task_id, title: d.title || "", description: d.description || "", progress: 0, last_seq: 0 };
      entry = this.addTask(t, "prepend");
      if (ev.type !== "task_created") this.fillTask(d.task_id); // older than the loaded page: fetch its title
    }
    const t = entry.t;
    t.last_seq = ev.seq;
    if (d.status) t.status = d.status;
    if (typeof d.progress === "number") t.progress = d.progress;
    switch (ev.type) {
      case "task_created":
        t.title = d.title;
        t.description = d.description;
        break;
      case "task_progress":
        t.step = d.step;
        t.tool = d.tool;
        t.message = d.message;
        break;
      case "task_completed":
        t.result = d.result;
        break;
      case "task_failed":
        t.error = d.error;
        break;
      case "task_cancelled":
        t.message = d.reason ? `cancelled: ${d.reason}` : "cancelled";
        break;
    }
    entry.timelineStale = true;
    this.tasks.mark(d.task_id);
    this.schedule();
  }

  async fillTask(id) {
    try {
      const t = await this.api(`/api/v1/tasks/${encodeURIComponent(id)}`);
      const entry = this.tasks.get(id);
      if (this.closed || !entry) return;
      Object.assign(entry.t, { title: t.title, description: t.description, error: entry.t.error || t.error });
      this.tasks.mark(id);
      this.schedule();
    } catch {
      /* the row keeps its id as title */
    }
  }

  toggleTimeline(entry) {
    if (entry.timeline) {
      entry.timeline.remove();
      entry.timeline = null;
      entry.cells.toggle.setAttribute("aria-expanded", "false");
      return;
    }
    const list = el("ol", { class: "timeline", "aria-label": `Progress of ${entry.t.title || entry.t.id}` });
    entry.timeline = el(
      "tr",
      { class: "timeline-row", "data-timeline-for": entry.t.id },
      el("td", { colspan: 4 }, list),
    );
    entry.cells.toggle.setAttribute("aria-expanded", "true");
    entry.node.after(entry.timeline);
    this.loadTimeline(entry);
  }

  async loadTimeline(entry) {
    entry.timelineStale = false;
    const row = entry.timeline;
    let history;
    try {
      history = await this.api(`/api/v1/tasks/${encodeURIComponent(entry.t.id)}/progress`);
    } catch (e) {
      if (row === entry.timeline) row.querySelector("ol").replaceChildren(el("li", { class: "error", text: e.message }));
      return;
    }
    if (this.closed || row !== entry.timeline) return;
    const items = [];
    let previous = null;
    for (const p of history.progress || []) {
      const at = new Date(p.at);
      const gap = previous ? `+${span(at - previous)}` : "start";
      previous = at;
      const what = [`${p.progress}%`, STATUS_LABEL[p.status] || p.status, p.step, p.tool, p.message].filter(Boolean);
      items.push(
        el(
          "li",
          { "data-seq": p.seq, "data-status": p.status, class: p.error ? "error" : null },
          el("time", { datetime: at.toISOString(), title: at.toLocaleString(), text: clock(at) }),
          el("span", { class: "gap", text: gap }),
          what.join(" · "),
        ),
      );
    }
    if (!items.length) items.push(el("li", { class: "empty", text: "No progress reported yet." }));
    row.querySelector("ol").replaceChildren(...items);
  }

  // ---- agents ----

  upsertAgent(a) {
    let entry = this.agents.get(a.id);
    if (entry) {
      Object.assign(entry.a, a);
    } else {
      const name = el("strong");
      const meta = el("span", { class: "meta" });
      const status = el("span", { class: "agent-status" });
      const node = el("li", { "data-agent-id": a.id }, name, meta, status);
      const data = { ...a };
      entry = {
        a: data,
        node,
        cells: { name, meta, status },
        haystack: () => [data.id, data.name, data.type, data.status, ...(data.capabilities || [])].join(" "),
      };
      this.agents.add(a.id, entry, "append");
      $("agent-ids").append(el("option", { value: a.id }));
    }
    this.agents.mark(a.id);
    this.schedule();
  }

  renderAgent({ a, node, cells }) {
    node.dataset.agentStatus = a.status;
    setText(cells.name, a.name || a.id);
    const meta = [a.id !== a.name ? a.id : "", a.type, (a.capabilities || []).join(", ")];
    setText(cells.meta, meta.filter(Boolean).join(" · "));
    setText(cells.status, a.status);
  }

  onAgentEvent(ev) {
    this.record(ev);
    const d = ev.data;
    const entry = this.agents.get(d.agent_id);
    if (entry && ev.seq <= entry.a.last_seq) return;
    this.upsertAgent({
      id: d.agent_id,
      name: d.name,
      type: d.type,
      capabilities: d.capabilities,
      status: d.status,
      last_seq: ev.seq,
    });
  }

  // ---- approvals ----

  addApproval(a, place) {
    if (this.approvals.get(a.id)) return;
    const entry = this.approvalCard(a);
    this.approvals.add(a.id, entry, place);
    this.schedule();
  }

  approvalCard(a) {
    const allowed = a.allowed_decisions || ["approve", "reject"];
    const comment = el("input", { type: "text", class: "comment", "aria-label": `Comment or answer for ${a.action}` });
    const canRespond = allowed.includes("respond");
    const commentLabel = el("label", {}, canRespond ? "Comment, or your answer for Respond" : "Comment (optional)", comment);
    const buttons = [];
    const btn = (action, label, primary) => {
      if (!allowed.includes(action)) return null;
      const b = el("button", { type: "button", "data-action": action, class: primary ? "primary" : null, text: label });
      buttons.push(b);
      return b;
    };
    const actions = el(
      "div",
      { class: "actions" },
      btn("approve", "Approve", true),
      btn("reject", "Reject"),
      btn("edit", "Edit…"),
      btn("respond", "Respond"),
    );
    const editArea = el("textarea", { class: "json", rows: 6, spellcheck: "false" });
    const saveEdit = el("button", { type: "button", "data-action": "save-edit", class: "primary", text: "Approve with these arguments" });
    const cancelEdit = el("button", { type: "button", "data-action": "cancel-edit", text: "Cancel edit" });
    const edit = el(
      "div",
      { class: "edit", hidden: true },
      el("label", {}, "Arguments (JSON)", editArea),
      el("div", { class: "actions" }, saveEdit, cancelEdit),
    );
    buttons.push(saveEdit, cancelEdit);
    const args = el("pre", { class: "args", text: pretty(a.arguments) });
    const error = el("p", { class: "error", role: "alert", hidden: true });
    const outcome = el("p", { class: "outcome", hidden: true });
    const decidedAt = el("p", { class: "decided-at meta", hidden: true });
    const deadline = el("p", { class: "deadline", hidden: !a.deadline });
    if (a.deadline) {
      const verb = DEADLINE_VERB[a.deadline_decision] || "decides automatically";
      deadline.append(liveTime(a.deadline, "countdown", { prefix: verb, late: "the deadline has passed: deciding automatically…" }));
    }
    const node = el(
      "li",
      { class: "card", "data-approval-id": a.id, "data-state": "pending" },
      el("h3", {}, el("code", { text: a.action }), " ", el("span", { class: "meta", text: `asked by ${a.requested_by}` })),
      el(
        "p",
        { class: "meta" },
        `execution ${a.execution_id}`,
        a.tool_call_id ? ` · tool call ${a.tool_call_id}` : "",
        a.requested_at ? ` · asked at ${clock(new Date(a.requested_at))}` : "",
      ),
      deadline,
      args,
      commentLabel,
      actions,
      edit,
      error,
      outcome,
      decidedAt,
    );
    const parts = { comment, commentLabel, actions, edit, editArea, error, outcome, decidedAt, deadline, args };
    const entry = {
      a,
      node,
      parts,
      rendered: false,
      haystack: () =>
        [a.id, a.action, a.execution_id, a.requested_by, a.decision?.decided_by, a.decision?.kind, pretty(a.arguments)].join(" "),
    };
    const busy = (on) => buttons.forEach((b) => (b.disabled = on));
    const run = (promise) => {
      busy(true);
      this.showCardError(parts, "");
      promise
        .then((reply) => this.decideApproval(a.id, reply.decision))
        .catch((e) => this.showCardError(parts, e.message))
        .finally(() => busy(false));
    };
    node.addEventListener("click", (e) => {
      const action = e.target.closest("button")?.dataset.action;
      const client = this.client;
      if (!action || !client) return;
      const text = comment.value.trim();
      switch (action) {
        case "approve":
          return run(client.approve(a.id, text));
        case "reject":
          return run(client.reject(a.id, text));
        case "respond":
          if (!text) {
            this.showCardError(parts, "Type your answer in the comment field first.");
            return comment.focus();
          }
          return run(client.respond(a.id, text));
        case "edit":
          editArea.value = pretty(a.arguments);
          edit.hidden = false;
          actions.hidden = true;
          return editArea.focus();
        case "cancel-edit":
          edit.hidden = true;
          actions.hidden = false;
          return;
        case "save-edit": {
          let parsed;
          try {
            parsed = JSON.parse(editArea.value);
          } catch (err) {
            return this.showCardError(parts, `The arguments are not valid JSON: ${err.message}`);
          }
          return run(client.edit(a.id, parsed, text));
        }
      }
    });
    return entry;
  }

  showCardError(parts, message) {
    parts.error.hidden = !message;
    setText(parts.error, message);
  }

  decideApproval(id, decision, seq) {
    const entry = this.approvals.get(id);
    if (!entry || !decision) return;
    if (seq !== undefined) entry.a.last_seq = Math.max(entry.a.last_seq || 0, seq);
    if (entry.a.decision) return; // the reply and the event both say it; once is enough
    entry.a.decision = decision;
    this.approvals.mark(id);
    this.schedule();
  }

  renderApproval(entry) {
    const { a, node, parts } = entry;
    if (!a.decision || entry.rendered) return;
    entry.rendered = true;
    const d = a.decision;
    node.dataset.state = "decided";
    node.dataset.decision = d.kind;
    node.dataset.decidedBy = d.decided_by;
    const label = DECISION_LABEL[d.kind] || d.kind;
    const by = d.by_deadline ? "automatically at the deadline" : `by ${d.decided_by}`;
    const note = d.message ? ` — “${d.message}”` : "";
    setText(parts.outcome, `${label} ${by}${note}`);
    parts.outcome.hidden = false;
    if (d.decided_at) {
      const at = new Date(d.decided_at);
      parts.decidedAt.replaceChildren(`decided at ${clock(at)} · `, liveTime(at, "ago"));
      parts.decidedAt.hidden = false;
    }
    parts.deadline.remove();
    parts.actions.remove();
    parts.edit.remove();
    parts.commentLabel.remove();
    parts.error.hidden = true;
    if (d.kind === "edit") parts.args.replaceWith(diffView(a.arguments, d.arguments));
  }

  onApprovalEvent(ev) {
    this.record(ev);
    const d = ev.data;
    const entry = this.approvals.get(d.approval_id);
    if (entry && ev.seq <= (entry.a.last_seq || 0)) return;
    if (ev.type === "approval_required") {
      this.addApproval(
        {
          id: d.approval_id,
          execution_id: d.execution_id,
          tool_call_id: d.tool_call_id,
          action: d.action,
          arguments: d.arguments,
          allowed_decisions: d.allowed_decisions || ["approve", "reject"],
          deadline: d.deadline,
          deadline_decision: d.deadline_decision,
          requested_by: d.requested_by,
          requested_at: ev.timestamp,
          decision: null,
          last_seq: ev.seq,
        },
        "prepend",
      );
      this.watchExecution(d.execution_id, {});
      return;
    }
    // approved / rejected / edited / responded
    const decision = {
      kind: d.decision,
      arguments: d.arguments,
      message: d.message,
      decided_by: d.decided_by,
      decided_at: d.decided_at,
      by_deadline: d.by_deadline,
    };
    this.decideApproval(d.approval_id, decision, ev.seq);
  }

  // ---- executions ----

  watchExecution(id, { agentId, place = "prepend" }) {
    if (!this.client || this.executions.get(id)) return;
    const status = el("span", { class: "status", text: "…" });
    const cancel = el("button", { type: "button", "data-action": "cancel", text: "Cancel" });
    const reply = el("p", { class: "reply", hidden: true });
    const log = el("ol", { class: "log", "aria-label": `Events of execution ${id}` });
    const meta = el("span", { class: "meta", text: agentId ? `agent ${agentId}` : "" });
    const node = el(
      "section",
      { class: "execution", "data-execution-id": id, "aria-label": `Execution ${id}` },
      el("h3", {}, "Execution ", el("code", { text: id }), status, meta, cancel),
      reply,
      log,
    );
    const entry = {
      id,
      node,
      status: "",
      agentId,
      text: "",
      parts: { status, cancel, reply, log, meta },
      pending: [],
      lastAt: null,
      haystack: () => [id, entry.agentId, entry.status, entry.text].join(" "),
    };
    this.executions.add(id, entry, place);
    cancel.addEventListener("click", () => {
      cancel.disabled = true;
      this.client?.cancel(id, "cancelled from the dashboard").catch((e) => {
        cancel.disabled = false;
        this.addLog(entry, "error", e.message, null);
        this.executions.mark(id);
        this.schedule();
      });
    });
    entry.sub = this.client.subscribe(`execution:${id}`, {
      afterSeq: 0, // an execution is short: show it from its start
      onEvent: (ev) => this.onExecutionEvent(id, ev),
    });
    this.evictExecutions();
    this.schedule();
  }

  evictExecutions() {
    if (this.executions.size <= MAX_WATCHED_EXECUTIONS) return;
    for (const [id, e] of this.executions.entries) {
      if (this.executions.size <= MAX_WATCHED_EXECUTIONS) break;
      if (!TERMINAL.has(e.status)) continue;
      e.sub?.unsubscribe();
      this.executions.remove(id);
    }
  }

  addLog(entry, kind, text, timestamp) {
    entry.pending.push([kind, text, timestamp]);
  }

  onExecutionEvent(id, ev) {
    this.record(ev);
    const entry = this.executions.get(id);
    if (!entry) return;
    const d = ev.data || {};
    if (d.status) entry.status = d.status;
    if (d.agent_id && !entry.agentId) entry.agentId = d.agent_id;
    const log = (kind, text) => this.addLog(entry, kind, text, ev.timestamp);
    switch (ev.type) {
      case "thinking":
        log("thinking", d.text);
        break;
      case "tool_call":
        log("tool call", `${d.tool}(${pretty(d.arguments)})`);
        break;
      case "tool_result":
        log(d.is_error ? "tool error" : "tool result", pretty(d.result));
        break;
      case "message_delta":
        entry.text += d.text;
        break;
      case "subagent_start":
      case "subagent_end":
        log(ev.type.replace("_", " "), [d.name, d.detail].filter(Boolean).join(": "));
        break;
      case "approval_required":
        log("approval required", `${d.action} — see Approvals`);
        break;
      case "approved":
      case "rejected":
      case "edited":
      case "responded":
        log(ev.type, `by ${d.decided_by}${d.message ? `: ${d.message}` : ""}`);
        break;
      case "complete":
        log("complete", d.output || "");
        break;
      case "error":
        log("error", d.message || "");
        break;
      default:
        log(ev.type.replace(/_/g, " "), d.detail || "");
    }
    this.executions.mark(id);
    this.schedule();
  }

  renderExecution(entry) {
    const { parts } = entry;
    entry.node.dataset.status = entry.status;
    setText(parts.status, entry.status.replace(/_/g, " "));
    if (entry.agentId) setText(parts.meta, `agent ${entry.agentId}`);
    parts.cancel.hidden = TERMINAL.has(entry.status);
    if (entry.text) {
      parts.reply.hidden = false;
      setText(parts.reply, entry.text);
    }
    if (!entry.pending.length) return;
    const frag = document.createDocumentFragment();
    for (const [kind, text, timestamp] of entry.pending.splice(0)) {
      const stamp = [];
      if (timestamp) {
        const at = new Date(timestamp);
        // The time between events is where an agent spends it (a slow tool, a waiting approval).
        const gap = entry.lastAt ? `+${span(at - entry.lastAt)}` : "start";
        entry.lastAt = at;
        stamp.push(
          el("span", { class: "when" }, el("span", { class: "clock", text: clock(at) }), " · ", liveTime(at, "ago")),
          el("span", { class: "gap", text: gap }),
        );
      }
      frag.append(el("li", { "data-kind": kind }, ...stamp, el("span", { class: "kind", text: kind }), text));
    }
    parts.log.append(frag);
    while (parts.log.childElementCount > MAX_LOG_ENTRIES) parts.log.firstElementChild.remove();
  }
}

// ---- the page: sign in, sign out, forms -------------------------------------------

let current = null; // the signed-in Dashboard, if any

function showError(id, message) {
  const p = $(id);
  p.hidden = !message;
  setText(p, message || "");
}

function showLogin(message) {
  $("login").hidden = false;
  showError("login-error", message);
  $("token").focus();
}

async function signIn(candidate) {
  current?.close();
  current = null;
  showError("login-error", "");
  const claims = decodeToken(candidate);
  if (!claims) return showLogin("That is not a Herald token: expected a JWT (three parts separated by dots).");
  if (typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
    return showLogin("That token has expired. Make a new one and paste it here.");
  }
  const board = new Dashboard(candidate);
  current = board;
  $("login-button").disabled = true;
  setText($("connection-text"), "Loading…");
  let loaded;
  try {
    loaded = await board.load();
  } catch (e) {
    if (current !== board) return;
    board.close();
    current = null;
    setText($("connection-text"), "Not connected");
    if (e instanceof HttpError && (e.status === 401 || e.status === 403)) {
      return showLogin(`Herald refused the token: ${e.message}`);
    }
    return showLogin(`Cannot load from Herald: ${e.message}`);
  } finally {
    $("login-button").disabled = false;
  }
  if (current !== board) return;
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  $("filter-box").hidden = false;
  $("token").value = "";
  board.start(loaded);
  board.setFilter($("filter").value);
}

function signOut() {
  current?.close();
  current = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("filter-box").hidden = true;
  const p = $("connection");
  p.dataset.state = "closed";
  p.dataset.attempt = "0";
  setText($("connection-text"), "Not connected");
  showLogin("");
}

function parseInput(text) {
  const trimmed = text.trim();
  if (!trimmed) return null;
  try {
    return JSON.parse(trimmed);
  } catch {
    return trimmed; // plain text: Herald passes it on as {"prompt": text}
  }
}

function init() {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    if (value) signIn(value);
  });
  $("refresh-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("refresh-token").value.trim();
    if (value) current?.usePastedToken(value);
  });
  $("filter").addEventListener("input", (e) => current?.setFilter(e.target.value));
  $("logout").addEventListener("click", signOut);
  $("run-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const board = current;
    if (!board?.client) return;
    const agentId = $("run-agent").value.trim();
    const button = $("run-button");
    button.disabled = true;
    showError("run-error", "");
    board.client
      .execute(agentId, parseInput($("run-input").value))
      .then((reply) => board.watchExecution(reply.execution_id, { agentId }))
      .catch((err) => showError("run-error", `Could not run ${agentId}: ${err.message}`))
      .finally(() => (button.disabled = false));
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else showLogin("");
}

init();
