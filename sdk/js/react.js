// herald-client/react — React hooks over HeraldClient (React is a peer
// dependency; no JSX, so this file runs as is).
//
//   const { client, state } = useHerald({ url, token });   // one client per tree
//   <HeraldProvider client={client}> … </HeraldProvider>
//   useChannel("task_updates", { on: { task_progress(ev) {…} } })
//   useTask(taskId)        // the task: its snapshot, then live
//   useApprovals()         // pending approvals, live, with approve/reject/edit/respond

import { createContext, createElement, useCallback, useContext, useEffect, useRef, useState } from "react";
import { HeraldClient, HeraldError } from "./herald-client.js";

const HeraldContext = createContext(null);

/** Gives `client` to the hooks below it. */
export function HeraldProvider({ client, children }) {
  return createElement(HeraldContext.Provider, { value: client }, children);
}

function useClient(hook) {
  const client = useContext(HeraldContext);
  if (!client) throw new Error(`${hook} must be used inside <HeraldProvider client={…}>`);
  return client;
}

/**
 * With options: creates this tree's one client (connected while the component
 * is mounted, closed when it unmounts); hand it to <HeraldProvider>. Without:
 * the provider's client. Either way also its connection state, kept current.
 */
export function useHerald(options) {
  const provided = useContext(HeraldContext);
  const [own] = useState(() => (options ? new HeraldClient({ ...options, autoConnect: false }) : null));
  const client = own ?? provided;
  if (!client) throw new Error("useHerald() needs options, or a <HeraldProvider client={…}> above it");
  useEffect(() => {
    if (!own) return undefined;
    if (own.token || own.getToken) own.connect();
    return () => own.close();
  }, [own]);
  const [status, setStatus] = useState({ state: client.state, error: client.error });
  useEffect(() => {
    setStatus({ state: client.state, error: client.error });
    return client.on("state", (s) => setStatus({ state: s.state, error: client.error }));
  }, [client]);
  return { client, state: status.state, error: status.error };
}

/**
 * Subscribes to `channel` while mounted (null: none). `afterSeq` resumes after
 * that seq; `on` / `onEvent` are called for each event (the latest ones, no
 * resubscription when they change). Returns the last `keep` events (default
 * 100; 0 keeps none), the last seq delivered and the channel's error, if any.
 */
export function useChannel(channel, { afterSeq, on, onEvent, keep = 100 } = {}) {
  const client = useClient("useChannel");
  const handlers = useRef({ on, onEvent });
  handlers.current = { on, onEvent };
  const [events, setEvents] = useState([]);
  const [lastSeq, setLastSeq] = useState(afterSeq ?? null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setEvents([]);
    setLastSeq(afterSeq ?? null);
    setError(null);
    if (!channel) return undefined;
    const sub = client.subscribe(channel, {
      afterSeq,
      onEvent(f) {
        handlers.current.on?.[f.type]?.(f);
        handlers.current.onEvent?.(f);
        setLastSeq(f.seq);
        if (keep > 0) setEvents((list) => [...list, f].slice(-keep));
      },
      onError: setError,
    });
    return () => sub.unsubscribe();
    // afterSeq is where a subscription starts, not a reason to start another.
  }, [client, channel, keep]);
  return { events, lastSeq, error };
}

/** A task: its snapshot, then every change, live. `task` is null until the snapshot. */
export function useTask(taskId) {
  const [task, setTask] = useState(null);
  useEffect(() => setTask(null), [taskId]);
  const { error } = useChannel(taskId ? `task:${taskId}` : null, {
    keep: 0,
    onEvent: (f) => setTask((t) => applyTaskEvent(t, f)),
  });
  return { task, error };
}

/** A task after one event of its channel. */
export function applyTaskEvent(task, f) {
  if (f.type === "task_snapshot") return f.data;
  if (!task || !f.type.startsWith("task_")) return task;
  const d = f.data || {};
  const next = { ...task, last_seq: f.seq, updated_at: f.timestamp ?? task.updated_at };
  if (d.status) next.status = d.status;
  if (typeof d.progress === "number") next.progress = d.progress;
  for (const k of ["title", "description", "step", "tool", "message"]) if (typeof d[k] === "string") next[k] = d[k];
  if (f.type === "task_completed") next.result = d.result ?? "";
  if (f.type === "task_failed") next.error = d.error ?? "";
  if (["task_completed", "task_failed", "task_cancelled"].includes(f.type)) next.completed_at = f.timestamp ?? null;
  return next;
}

const DECIDED = new Set(["approved", "rejected", "edited", "responded"]);

function httpUrl(client, path) {
  const u = new URL(client.url);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  u.pathname = path;
  u.search = "";
  return u.toString();
}

/** An approval as the HTTP API lists it, from its `approval_required` event. */
function fromEvent(f) {
  const { approval_id, ...rest } = f.data;
  return { id: approval_id, ...rest, requested_at: f.timestamp, decision: null, last_seq: f.seq };
}

/**
 * The tenant's pending approvals, live: listed once subscribed to the
 * `approvals` channel (and again after each reconnect), then kept current by
 * its events. `approve` / `reject` / `edit` / `respond` decide over the
 * client's connection; the decided approval leaves the list by its event.
 */
export function useApprovals() {
  const client = useClient("useApprovals");
  const [approvals, setApprovals] = useState([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState(null);
  useEffect(() => {
    let live = true;
    const decided = new Set();
    const load = async () => {
      try {
        const fetchImpl = client.fetchImpl ?? fetch;
        const res = await fetchImpl(httpUrl(client, "/api/v1/approvals"), {
          headers: { Authorization: `Bearer ${client.token}` },
        });
        const body = await res.json();
        if (!res.ok) throw new HeraldError(body?.error?.code ?? "unknown", body?.error?.message ?? res.statusText);
        if (!live) return;
        const pending = body.approvals.filter((a) => !a.decision && !decided.has(a.id));
        setApprovals((current) => {
          const byId = new Map(pending.map((a) => [a.id, a]));
          for (const a of current) if (!byId.has(a.id) && !decided.has(a.id)) byId.set(a.id, a);
          return [...byId.values()].sort((a, b) => a.last_seq - b.last_seq);
        });
        setError(null);
      } catch (e) {
        if (live) setError(e);
      } finally {
        if (live) setLoading(false);
      }
    };
    const sub = client.subscribe("approvals", {
      onSubscribed: load,
      onError: setError,
      onEvent(f) {
        if (f.type === "approval_required") {
          const a = fromEvent(f);
          setApprovals((list) => (list.some((x) => x.id === a.id) ? list : [...list, a]));
        } else if (DECIDED.has(f.type)) {
          decided.add(f.data.approval_id);
          setApprovals((list) => list.filter((x) => x.id !== f.data.approval_id));
        }
      },
    });
    return () => {
      live = false;
      sub.unsubscribe();
    };
  }, [client]);
  const approve = useCallback((id, message) => client.approve(id, message), [client]);
  const reject = useCallback((id, message) => client.reject(id, message), [client]);
  const edit = useCallback((id, args, message) => client.edit(id, args, message), [client]);
  const respond = useCallback((id, text) => client.respond(id, text), [client]);
  return { approvals, loading, error, approve, reject, edit, respond };
}
