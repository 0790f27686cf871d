// herald-client/react against a real Herald (target/debug/herald) and, for
// approvals, the example executor (target/debug/examples/executor): hooks
// rendered with react-test-renderer, the client on the `ws` package (Node 20
// has no WebSocket of its own).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createElement as h } from "react";
import TestRenderer, { act } from "react-test-renderer";
import WebSocket from "ws";
import { HeraldProvider, useApprovals, useChannel, useHerald, useTask } from "herald-client/react";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const ROOT = resolve(import.meta.dirname, "../../..");
const HERALD_BIN = process.env.HERALD_BIN ?? join(ROOT, "target/debug/herald");
const EXECUTOR_BIN = process.env.HERALD_EXECUTOR_BIN ?? join(ROOT, "target/debug/examples/executor");
const SECRET = "sdk-js-test-secret-that-is-at-least-32-bytes";

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
function token(sub, role) {
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, roles: [role], exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}
const admin = token("alice", "admin");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dataDir = mkdtempSync(join(tmpdir(), "herald-sdk-js-"));
let base, herald, executor;

before(async () => {
  const srv = createServer().listen(0, "127.0.0.1");
  await new Promise((r) => srv.once("listening", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  base = `http://127.0.0.1:${port}`;
  herald = spawn(HERALD_BIN, [], {
    env: { ...process.env, HERALD_ADDR: `127.0.0.1:${port}`, HERALD_DATA_DIR: dataDir, HERALD_JWT_SECRET: SECRET, HERALD_LOG: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {}
    assert.ok(i < 300, "herald answers /healthz within 30 s");
    await sleep(100);
  }
});

after(async () => {
  executor?.kill("SIGKILL");
  herald?.kill("SIGTERM");
  if (herald) await new Promise((r) => herald.once("exit", r));
  rmSync(dataDir, { recursive: true, force: true });
});

async function api(method, path, body) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${admin}`, "Content-Type": "application/json" },
    body: body && JSON.stringify(body),
  });
  const json = await res.json();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** Polls `check` (with React's updates flushed) for up to 10 s. */
async function eventually(what, check) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    let ok = false;
    await act(async () => {
      await sleep(20);
    });
    try {
      ok = check();
    } catch {}
    if (ok) return;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
  }
}

/** This tree's client, made by useHerald(options), provided to the hooks below. */
function Root({ probe, children }) {
  const { client, state } = useHerald({ url: `${base.replace("http", "ws")}/ws`, token: admin, WebSocket });
  probe.client = client;
  probe.state = state;
  return h(HeraldProvider, { client }, children);
}

test("useHerald, useTask and useChannel: a task's snapshot, then every change, live", async () => {
  const task = await api("POST", "/tasks", { title: "Render me" });
  const probe = {};
  const seen = {};
  function TaskView() {
    const { task: t } = useTask(task.id);
    seen.task = t;
    return h("span", null, t ? `${t.status}:${t.progress}` : "loading");
  }
  function Log() {
    const { events, lastSeq } = useChannel("task_updates", { on: { task_progress: (e) => (seen.onProgress = e.data.progress) } });
    seen.events = events;
    seen.lastSeq = lastSeq;
    return null;
  }
  let r;
  await act(async () => {
    r = TestRenderer.create(h(Root, { probe }, h(TaskView), h(Log)));
  });
  await eventually("the connection to open", () => probe.state === "open");
  await eventually("the snapshot", () => seen.task?.id === task.id && seen.task.status === "pending");

  await api("PUT", `/tasks/${task.id}/progress`, { progress: 40, step: "halfway" });
  await eventually("progress 40", () => seen.task.progress === 40 && seen.task.step === "halfway");
  await api("POST", `/tasks/${task.id}/complete`, { result: "all done" });
  await eventually("completion", () => seen.task.status === "completed" && seen.task.result === "all done");
  assert.equal(r.toJSON().children[0], `completed:${seen.task.progress}`);

  assert.deepEqual(seen.events.map((e) => e.type), ["task_progress", "task_completed"]);
  assert.equal(seen.onProgress, 40);
  assert.equal(seen.lastSeq, seen.events.at(-1).seq);
  assert.equal(seen.task.last_seq, seen.lastSeq);

  await act(async () => r.unmount());
  assert.equal(probe.client.state, "closed", "the tree's client closes with it");
});

test("useApprovals lists pending approvals, follows them live and decides them", async () => {
  executor = spawn(EXECUTOR_BIN, [], {
    env: { ...process.env, HERALD_URL: base, HERALD_TOKEN: token("executor", "agent"), HERALD_AGENT_ID: "mailer" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  // One approval exists before the component mounts: it comes from the list.
  const first = await api("POST", "/executions", { agent_id: "mailer", input: "first" });
  for (let i = 0; (await api("GET", "/approvals")).approvals.length === 0; i++) {
    assert.ok(i < 200, "the executor asks within 20 s");
    await sleep(100);
  }
  const probe = {};
  const seen = {};
  function Inbox() {
    seen.hook = useApprovals();
    return h("ul", null, seen.hook.approvals.map((a) => h("li", { key: a.id }, a.action)));
  }
  let r;
  await act(async () => {
    r = TestRenderer.create(h(Root, { probe }, h(Inbox)));
  });
  await eventually("the listed approval", () => !seen.hook.loading && seen.hook.approvals.length === 1);
  const listed = seen.hook.approvals[0];
  assert.equal(listed.execution_id, first.id);
  assert.equal(listed.action, "send_email");

  // A second one arrives live, as an event.
  const second = await api("POST", "/executions", { agent_id: "mailer", input: "second" });
  await eventually("the live approval", () => seen.hook.approvals.length === 2);
  const live = seen.hook.approvals[1];
  assert.equal(live.execution_id, second.id);
  assert.deepEqual(live.allowed_decisions, ["approve", "reject", "edit", "respond"]);
  assert.equal(r.toJSON().children.length, 2);

  await act(async () => {
    await seen.hook.approve(listed.id, "fine");
    await seen.hook.reject(live.id, "not this one");
  });
  await eventually("both decided", () => seen.hook.approvals.length === 0);
  for (const [id, status] of [[first.id, "completed"], [second.id, "completed"]]) {
    for (let i = 0; (await api("GET", `/executions/${id}`)).status !== status; i++) {
      assert.ok(i < 100, `execution ${id} ends ${status}`);
      await sleep(100);
    }
  }
  await act(async () => r.unmount());
});

test("npm pack: the client is web/herald-client.js itself, plus the React hooks", () => {
  const out = execFileSync("npm", ["pack", "--dry-run", "--json"], { cwd: resolve(import.meta.dirname, ".."), encoding: "utf8" });
  const files = JSON.parse(out)[0].files.map((f) => f.path).sort();
  assert.deepEqual(files, ["herald-client.d.ts", "herald-client.js", "package.json", "react.d.ts", "react.js"]);
  execFileSync("node", ["scripts/sync.mjs", "--check"], { cwd: resolve(import.meta.dirname, "..") });
});
