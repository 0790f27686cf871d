// The Herald dashboard: tasks, agents, approvals and executions, live.
//
// State is loaded once over HTTP; each live channel then resumes after the
// highest `last_seq` of what was loaded, so nothing between the load and the
// subscription is lost. Events only mark rows dirty; one requestAnimationFrame
// applies all changes, so a burst of events over 1,000 rows costs one layout.

import { HeraldClient, decodeToken } from "/herald-client.js";

const TOKEN_KEY = "herald.token";
const MAX_TASKS = 1000; // the API's largest page
const MAX_WATCHED_EXECUTIONS = 20; // each one is a subscription; Herald allows 100 per connection
const MAX_LOG_ENTRIES = 500;

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

const STATUS_LABEL = {
  pending: "pending",
  in_progress: "running",
  completed: "completed",
  failed: "failed",
  cancelled: "cancelled",
};

const DECISION_LABEL = { approve: "Approved", reject: "Rejected", edit: "Edited and approved", respond: "Answered" };

// ---- state of one signed-in session -------------------------------------

let client = null;
let session = 0; // bumped on every sign-in/out, so late answers of an old one are dropped
let token = null;

const tasks = new Map(); // id → {t, row, cells, isNew}
const agents = new Map(); // id → {a, li, cells}
const approvals = new Map(); // id → {a, li, parts}
const executions = new Map(); // id → {status, section, parts, sub, pending: []}
const dirty = { tasks: new Set(), agents: new Set(), approvals: new Set(), executions: new Set() };
const seqs = {}; // channel → seqs delivered to this page, in order (for tests and troubleshooting)
let seqsChanged = false;
let frame = 0;

function schedule() {
  if (!frame) frame = requestAnimationFrame(flush);
}

function record(ev) {
  (seqs[ev.channel] ??= []).push(ev.seq);
  seqsChanged = true;
}

// ---- HTTP ---------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path) {
  const resp = await fetch(path, { headers: { authorization: `Bearer ${token}` }, cache: "no-store" });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new HttpError(resp.status, body?.error?.message || `HTTP ${resp.status}`);
  return body;
}

// ---- connection status --------------------------------------------------

function showConnection({ state, attempt, error }) {
  const p = $("connection");
  p.dataset.state = state;
  p.dataset.attempt = String(attempt ?? 0);
  const text = {
    connecting: "Connecting…",
    open: "Live",
    reconnecting: `Reconnecting${attempt ? ` (attempt ${attempt})` : ""}…`,
    closed: error ? "Disconnected" : "Not connected",
  }[state];
  setText($("connection-text"), text);
  if (state === "closed" && error) {
    // The client gave up for good (token refused or expired): ask for a new one.
    showLogin(`${error.message}. Paste a new token to continue.`);
  }
}

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

// ---- tasks --------------------------------------------------------------

function taskRow(id) {
  const title = el("th", { scope: "row" });
  const status = el("span", { class: "status" });
  const bar = el("progress", { max: 100, value: 0 });
  const pct = el("span", { class: "pct" });
  const detail = el("span", { class: "detail" });
  const row = el(
    "tr",
    { "data-task-id": id },
    title,
    el("td", {}, status),
    el("td", {}, bar, " ", pct),
    el("td", {}, detail),
  );
  return { row, cells: { title, status, bar, pct, detail } };
}

function renderTask(entry) {
  const { t, row, cells } = entry;
  setText(cells.title, t.title || t.id);
  cells.title.title = t.description || "";
  setText(cells.status, STATUS_LABEL[t.status] || t.status);
  row.dataset.status = t.status;
  row.dataset.progress = String(t.progress);
  if (cells.bar.value !== t.progress) cells.bar.value = t.progress;
  cells.bar.setAttribute("aria-label", `${t.title || t.id}: ${t.progress}%`);
  setText(cells.pct, `${t.progress}%`);
  const parts = [t.step, t.tool, t.message || t.result || t.error].filter(Boolean);
  setText(cells.detail, parts.join(" · "));
}

function addTask(t, isNew) {
  const entry = { t, ...taskRow(t.id), isNew };
  tasks.set(t.id, entry);
  return entry;
}

const onTaskEvent = (ev) => {
  record(ev);
  const d = ev.data;
  let entry = tasks.get(d.task_id);
  if (entry && ev.seq <= entry.t.last_seq) return; // already in what HTTP returned
  if (!entry) {
    entry = addTask({ id: d.task_id, title: d.title || "", description: d.description || "", progress: 0, last_seq: 0 }, true);
    if (ev.type !== "task_created") fillTask(d.task_id); // older than the loaded page: fetch its title
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
      t.message = d.result ? `result: ${d.result}` : "completed";
      break;
    case "task_failed":
      t.message = `error: ${d.error}`;
      break;
    case "task_cancelled":
      t.message = d.reason ? `cancelled: ${d.reason}` : "cancelled";
      break;
  }
  dirty.tasks.add(d.task_id);
  schedule();
};

async function fillTask(id) {
  const my = session;
  try {
    const t = await api(`/api/v1/tasks/${encodeURIComponent(id)}`);
    const entry = tasks.get(id);
    if (my !== session || !entry) return;
    entry.t.title = t.title;
    entry.t.description = t.description;
    dirty.tasks.add(id);
    schedule();
  } catch {
    /* the row keeps its id as title */
  }
}

// ---- agents -------------------------------------------------------------

function renderAgent(entry) {
  const { a, li, cells } = entry;
  li.dataset.agentStatus = a.status;
  setText(cells.name, a.name || a.id);
  setText(cells.meta, [a.id !== a.name ? a.id : "", a.type, (a.capabilities || []).join(", ")].filter(Boolean).join(" · "));
  setText(cells.status, a.status);
}

function upsertAgent(a) {
  let entry = agents.get(a.id);
  if (!entry) {
    const name = el("strong");
    const meta = el("span", { class: "meta" });
    const status = el("span", { class: "agent-status" });
    const li = el("li", { "data-agent-id": a.id }, name, meta, status);
    entry = { a, li, cells: { name, meta, status }, isNew: true };
    agents.set(a.id, entry);
  } else {
    Object.assign(entry.a, a);
  }
  dirty.agents.add(a.id);
  schedule();
}

const onAgentEvent = (ev) => {
  record(ev);
  const d = ev.data;
  const entry = agents.get(d.agent_id);
  if (entry && ev.seq <= entry.a.last_seq) return;
  upsertAgent({ id: d.agent_id, name: d.name, type: d.type, capabilities: d.capabilities, status: d.status, last_seq: ev.seq });
};

// ---- approvals ----------------------------------------------------------

function approvalCard(a) {
  const comment = el("input", { type: "text", class: "comment", "aria-label": `Comment or answer for ${a.action}` });
  const canRespond = a.allowed_decisions.includes("respond");
  const commentLabel = el("label", {}, canRespond ? "Comment, or your answer for Respond" : "Comment (optional)", comment);
  const buttons = [];
  const btn = (action, label, primary) => {
    if (!a.allowed_decisions.includes(action)) return null;
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
  const error = el("p", { class: "error", role: "alert", hidden: true });
  const outcome = el("p", { class: "outcome", hidden: true });
  const args = el("pre", { class: "args", text: pretty(a.arguments) });
  const li = el(
    "li",
    { class: "card", "data-approval-id": a.id, "data-state": "pending" },
    el("h3", {}, el("code", { text: a.action }), " ", el("span", { class: "meta", text: `asked by ${a.requested_by}` })),
    el(
      "p",
      { class: "meta" },
      `execution ${a.execution_id}`,
      a.tool_call_id ? ` · tool call ${a.tool_call_id}` : "",
      a.deadline ? ` · decided automatically (${a.deadline_decision}) at ${new Date(a.deadline).toLocaleString()}` : "",
    ),
    args,
    commentLabel,
    actions,
    edit,
    error,
    outcome,
  );
  const parts = { comment, commentLabel, actions, edit, editArea, error, outcome, buttons, args };
  const busy = (on) => buttons.forEach((b) => (b.disabled = on));
  const run = (promise) => {
    busy(true);
    showCardError(parts, "");
    promise
      .then((reply) => decideApproval(a.id, reply.decision))
      .catch((e) => showCardError(parts, e.message))
      .finally(() => busy(false));
  };
  li.addEventListener("click", (e) => {
    const action = e.target.closest("button")?.dataset.action;
    if (!action || !client) return;
    const text = comment.value.trim();
    switch (action) {
      case "approve":
        return run(client.approve(a.id, text));
      case "reject":
        return run(client.reject(a.id, text));
      case "respond":
        if (!text) {
          showCardError(parts, "Type your answer in the comment field first.");
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
          return showCardError(parts, `The arguments are not valid JSON: ${err.message}`);
        }
        return run(client.edit(a.id, parsed, text));
      }
    }
  });
  return { li, parts };
}

function showCardError(parts, message) {
  parts.error.hidden = !message;
  setText(parts.error, message);
}

function addApproval(a) {
  if (approvals.has(a.id)) return;
  const { li, parts } = approvalCard(a);
  approvals.set(a.id, { a, li, parts, isNew: true });
  dirty.approvals.add(a.id);
  watchExecution(a.execution_id, {});
  schedule();
}

function decideApproval(id, decision, seq) {
  const entry = approvals.get(id);
  if (!entry || !decision) return;
  if (seq !== undefined) entry.a.last_seq = Math.max(entry.a.last_seq || 0, seq);
  if (entry.a.decision) return; // the reply and the event both say it; once is enough
  entry.a.decision = decision;
  dirty.approvals.add(id);
  schedule();
}

function renderApproval(entry) {
  const { a, li, parts } = entry;
  if (!a.decision) return;
  li.dataset.state = "decided";
  li.dataset.decision = a.decision.kind;
  li.dataset.decidedBy = a.decision.decided_by;
  const label = DECISION_LABEL[a.decision.kind] || a.decision.kind;
  const by = a.decision.by_deadline ? "by the deadline" : `by ${a.decision.decided_by}`;
  const note = a.decision.message ? ` — “${a.decision.message}”` : "";
  setText(parts.outcome, `${label} ${by}${note}`);
  parts.outcome.hidden = false;
  parts.actions.remove();
  parts.edit.remove();
  parts.commentLabel.remove();
  if (a.decision.kind === "edit") setText(parts.args, pretty(a.decision.arguments));
}

const onApprovalEvent = (ev) => {
  record(ev);
  const d = ev.data;
  const entry = approvals.get(d.approval_id);
  if (entry && ev.seq <= (entry.a.last_seq || 0)) return;
  if (ev.type === "approval_required") {
    addApproval({
      id: d.approval_id,
      execution_id: d.execution_id,
      tool_call_id: d.tool_call_id,
      action: d.action,
      arguments: d.arguments,
      allowed_decisions: d.allowed_decisions || ["approve", "reject"],
      deadline: d.deadline,
      deadline_decision: d.deadline_decision,
      requested_by: d.requested_by,
      decision: null,
      last_seq: ev.seq,
    });
    return;
  }
  // approved / rejected / edited / responded
  decideApproval(
    d.approval_id,
    {
      kind: d.decision,
      arguments: d.arguments,
      message: d.message,
      decided_by: d.decided_by,
      decided_at: d.decided_at,
      by_deadline: d.by_deadline,
    },
    ev.seq,
  );
};

// ---- executions ---------------------------------------------------------

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

function watchExecution(id, { agentId }) {
  if (!client || executions.has(id)) return;
  const status = el("span", { class: "status", text: "…" });
  const cancel = el("button", { type: "button", "data-action": "cancel", text: "Cancel" });
  const reply = el("p", { class: "reply", hidden: true });
  const log = el("ol", { class: "log", "aria-label": `Events of execution ${id}` });
  const meta = el("span", { class: "meta", text: agentId ? `agent ${agentId}` : "" });
  const section = el(
    "section",
    { class: "execution", "data-execution-id": id, "aria-label": `Execution ${id}` },
    el("h3", {}, "Execution ", el("code", { text: id }), status, meta, cancel),
    reply,
    log,
  );
  const entry = { status: "", section, parts: { status, cancel, reply, log, meta }, pending: [], isNew: true, text: "" };
  executions.set(id, entry);
  cancel.addEventListener("click", () => {
    cancel.disabled = true;
    client.cancel(id, "cancelled from the dashboard").catch((e) => {
      cancel.disabled = false;
      addLog(entry, "error", e.message);
    });
  });
  entry.sub = client.subscribe(`execution:${id}`, {
    afterSeq: 0, // an execution is short: show it from its start
    onEvent: (ev) => onExecutionEvent(id, ev),
  });
  evictExecutions();
  dirty.executions.add(id);
  schedule();
}

function evictExecutions() {
  if (executions.size <= MAX_WATCHED_EXECUTIONS) return;
  for (const [id, e] of executions) {
    if (executions.size <= MAX_WATCHED_EXECUTIONS) break;
    if (!TERMINAL.has(e.status)) continue;
    e.sub?.unsubscribe();
    e.section.remove();
    executions.delete(id);
  }
}

function addLog(entry, kind, text) {
  entry.pending.push([kind, text]);
}

function onExecutionEvent(id, ev) {
  record(ev);
  const entry = executions.get(id);
  if (!entry) return;
  const d = ev.data || {};
  if (d.status) entry.status = d.status;
  if (d.agent_id && !entry.agentId) entry.agentId = d.agent_id;
  switch (ev.type) {
    case "thinking":
      addLog(entry, "thinking", d.text);
      break;
    case "tool_call":
      addLog(entry, "tool call", `${d.tool}(${pretty(d.arguments)})`);
      break;
    case "tool_result":
      addLog(entry, d.is_error ? "tool error" : "tool result", pretty(d.result));
      break;
    case "message_delta":
      entry.text += d.text;
      break;
    case "subagent_start":
    case "subagent_end":
      addLog(entry, ev.type.replace("_", " "), [d.name, d.detail].filter(Boolean).join(": "));
      break;
    case "approval_required":
      addLog(entry, "approval required", `${d.action} — see Approvals`);
      break;
    case "approved":
    case "rejected":
    case "edited":
    case "responded":
      addLog(entry, ev.type, `by ${d.decided_by}${d.message ? `: ${d.message}` : ""}`);
      break;
    case "complete":
      addLog(entry, "complete", d.output || "");
      break;
    case "error":
      addLog(entry, "error", d.message || "");
      break;
    default:
      addLog(entry, ev.type.replace(/_/g, " "), d.detail || "");
  }
  dirty.executions.add(id);
  schedule();
}

function renderExecution(id, entry) {
  const { parts } = entry;
  entry.section.dataset.status = entry.status;
  setText(parts.status, entry.status.replace(/_/g, " "));
  if (entry.agentId) setText(parts.meta, `agent ${entry.agentId}`);
  parts.cancel.hidden = TERMINAL.has(entry.status);
  if (entry.text) {
    parts.reply.hidden = false;
    setText(parts.reply, entry.text);
  }
  if (entry.pending.length) {
    const frag = document.createDocumentFragment();
    for (const [kind, text] of entry.pending.splice(0)) {
      frag.append(el("li", { "data-kind": kind }, el("span", { class: "kind", text: kind }), text));
    }
    parts.log.append(frag);
    while (parts.log.childElementCount > MAX_LOG_ENTRIES) parts.log.firstElementChild.remove();
  }
}

// ---- one frame applies everything ----------------------------------------

function flush() {
  frame = 0;
  if (dirty.tasks.size) {
    const body = $("tasks");
    const fresh = document.createDocumentFragment();
    const newOnes = [];
    for (const id of dirty.tasks) {
      const entry = tasks.get(id);
      if (!entry) continue;
      renderTask(entry);
      if (entry.isNew) {
        entry.isNew = false;
        newOnes.push(entry.row);
      }
    }
    // Newest first, like the API: the last created goes on top.
    for (let i = newOnes.length - 1; i >= 0; i--) fresh.append(newOnes[i]);
    body.prepend(fresh);
    dirty.tasks.clear();
    $("tasks-empty").hidden = tasks.size > 0;
    setText($("tasks-count"), tasks.size ? `(${tasks.size})` : "");
  }
  if (dirty.agents.size) {
    for (const id of dirty.agents) {
      const entry = agents.get(id);
      renderAgent(entry);
      if (entry.isNew) {
        entry.isNew = false;
        $("agents").append(entry.li);
        $("agent-ids").append(el("option", { value: id }));
      }
    }
    dirty.agents.clear();
    $("agents-empty").hidden = agents.size > 0;
  }
  if (dirty.approvals.size) {
    for (const id of dirty.approvals) {
      const entry = approvals.get(id);
      if (entry.isNew) {
        entry.isNew = false;
        $("approvals").prepend(entry.li);
      }
      renderApproval(entry);
    }
    dirty.approvals.clear();
    const waiting = [...approvals.values()].filter((e) => !e.a.decision).length;
    $("approvals-empty").hidden = approvals.size > 0;
    setText($("approvals-count"), waiting ? `(${waiting} waiting)` : "");
  }
  if (dirty.executions.size) {
    for (const id of dirty.executions) {
      const entry = executions.get(id);
      if (!entry) continue;
      if (entry.isNew) {
        entry.isNew = false;
        $("executions").prepend(entry.section);
      }
      renderExecution(id, entry);
    }
    dirty.executions.clear();
    $("executions-empty").hidden = executions.size > 0;
  }
  if (seqsChanged) {
    seqsChanged = false;
    $("herald-debug").dataset.seqs = JSON.stringify(seqs);
  }
}

// ---- sign in / out --------------------------------------------------------

function reset() {
  session += 1;
  client?.close();
  client = null;
  for (const m of [tasks, agents, approvals, executions]) m.clear();
  for (const s of Object.values(dirty)) s.clear();
  for (const k of Object.keys(seqs)) delete seqs[k];
  for (const id of ["tasks", "agents", "approvals", "executions", "agent-ids"]) $(id).replaceChildren();
  $("herald-debug").dataset.seqs = "{}";
}

async function signIn(candidate) {
  reset();
  const my = session;
  showError("login-error", "");
  const claims = decodeToken(candidate);
  if (!claims) return showLogin("That is not a Herald token: expected a JWT (three parts separated by dots).");
  if (typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
    return showLogin("That token has expired. Make a new one and paste it here.");
  }
  token = candidate;
  $("login-button").disabled = true;
  setText($("connection-text"), "Loading…");
  let loaded;
  try {
    // In this order: each channel resumes after what its own load saw, and
    // approvals (loaded last) after the highest seq of all three.
    const t = await api(`/api/v1/tasks?limit=${MAX_TASKS}`);
    const a = await api("/api/v1/agents");
    const p = await api("/api/v1/approvals");
    loaded = { tasks: t.tasks || [], agents: a.agents || [], approvals: p.approvals || [] };
  } catch (e) {
    if (my !== session) return;
    $("login-button").disabled = false;
    setText($("connection-text"), "Not connected");
    if (e instanceof HttpError && (e.status === 401 || e.status === 403)) {
      return showLogin(`Herald refused the token: ${e.message}`);
    }
    return showLogin(`Cannot load from Herald: ${e.message}`);
  } finally {
    $("login-button").disabled = false;
  }
  if (my !== session) return;
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  $("token").value = "";

  const maxSeq = (list) => list.reduce((m, x) => Math.max(m, x.last_seq || 0), 0);
  const taskCursor = maxSeq(loaded.tasks);
  const agentCursor = maxSeq(loaded.agents);
  const approvalCursor = Math.max(taskCursor, agentCursor, maxSeq(loaded.approvals));

  // Oldest last in the API's answer: append in order, newest first.
  const frag = document.createDocumentFragment();
  for (const t of loaded.tasks) {
    const entry = addTask(t, false);
    renderTask(entry);
    frag.append(entry.row);
  }
  $("tasks").append(frag);
  $("tasks-empty").hidden = tasks.size > 0;
  setText($("tasks-count"), tasks.size ? `(${tasks.size})` : "");

  client = new HeraldClient({ token, autoConnect: false, onStateChange: showConnection });
  for (const a of loaded.agents) upsertAgent(a);
  for (const a of loaded.approvals) addApproval(a);
  if (!loaded.approvals.length) $("approvals-empty").hidden = false;
  client.subscribe("task_updates", { afterSeq: taskCursor, onEvent: onTaskEvent });
  client.subscribe("agent_status", { afterSeq: agentCursor, onEvent: onAgentEvent });
  client.subscribe("approvals", { afterSeq: approvalCursor, onEvent: onApprovalEvent });
  client.connect();
  schedule();
}

function signOut() {
  reset();
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  showConnection({ state: "closed", attempt: 0, error: null });
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
  $("logout").addEventListener("click", signOut);
  $("run-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!client) return;
    const agentId = $("run-agent").value.trim();
    const button = $("run-button");
    button.disabled = true;
    showError("run-error", "");
    client
      .execute(agentId, parseInput($("run-input").value))
      .then((reply) => watchExecution(reply.execution_id, { agentId }))
      .catch((err) => showError("run-error", `Could not run ${agentId}: ${err.message}`))
      .finally(() => (button.disabled = false));
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else showLogin("");
}

init();
