// The AG-UI endpoint driven by the real @ag-ui/client (HttpAgent, with its own
// event verification) against a real Herald and the example executor
// (examples/executor.rs): a full run with an approval decided over HTTP in
// the middle, and a rejoin after a Herald restart mid-run.
//
// Needs target/debug/herald and target/debug/examples/executor
// (`cargo build --bin herald --example executor`); HERALD_BIN and
// HERALD_EXECUTOR_BIN override the paths.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { HttpAgent } from "@ag-ui/client";

const ROOT = resolve(import.meta.dirname, "../..");
const HERALD_BIN = process.env.HERALD_BIN ?? join(ROOT, "target/debug/herald");
const EXECUTOR_BIN = process.env.HERALD_EXECUTOR_BIN ?? join(ROOT, "target/debug/examples/executor");
const SECRET = "agui-test-secret-that-is-at-least-32-bytes";
const AGENT = "example-agent";

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
function token(sub, role) {
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, roles: [role], exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}
const admin = token("alice", "admin");

async function freePort() {
  const srv = createServer().listen(0, "127.0.0.1");
  await new Promise((r) => srv.once("listening", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dataDir = mkdtempSync(join(tmpdir(), "herald-agui-"));
let port, base, herald, executor;

async function startHerald() {
  const child = spawn(HERALD_BIN, [], {
    env: { ...process.env, HERALD_ADDR: `127.0.0.1:${port}`, HERALD_DATA_DIR: dataDir, HERALD_JWT_SECRET: SECRET, HERALD_LOG: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) return child;
    } catch {}
    assert.ok(Date.now() < deadline, "herald answers /healthz within 30 s");
    assert.equal(child.exitCode, null, "herald is still running");
    await sleep(100);
  }
}

async function stopHerald() {
  const exited = new Promise((r) => herald.once("exit", r));
  herald.kill("SIGTERM");
  await exited;
}

before(async () => {
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  herald = await startHerald();
  executor = spawn(EXECUTOR_BIN, [], {
    env: { ...process.env, HERALD_URL: base, HERALD_TOKEN: token("executor", "agent"), HERALD_AGENT_ID: AGENT },
    stdio: ["ignore", "ignore", "inherit"],
  });
});

after(async () => {
  executor?.kill("SIGKILL");
  if (herald?.exitCode === null) await stopHerald();
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

const approve = (id) => api("POST", `/approvals/${id}/decide`, { decision: "approve", message: "go ahead" });

/** A minimal SSE reader over fetch: yields { id, event } (the data parsed). */
async function* sse(res) {
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/event-stream/);
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let id, data;
      for (const line of block.split("\n")) {
        if (line.startsWith("id:")) id = line.slice(3).trim();
        if (line.startsWith("data:")) data = line.slice(5).trim();
      }
      if (data) yield { id, event: JSON.parse(data) };
    }
  }
}

const input = (runId, threadId, text) => ({
  threadId,
  runId,
  messages: [{ id: randomUUID(), role: "user", content: text }],
  tools: [],
  context: [],
  state: { draft: true },
  forwardedProps: {},
});

/** HttpAgent rejoining a run: the same client, a GET instead of the POST. */
class RejoinAgent extends HttpAgent {
  requestInit() {
    return { method: "GET", headers: { ...this.headers, Accept: "text/event-stream" }, signal: this.abortController.signal };
  }
}

test("a full run with an approval decided over HTTP passes @ag-ui/client's verification", async () => {
  const agent = new HttpAgent({ url: `${base}/api/v1/agui/${AGENT}`, headers: { Authorization: `Bearer ${admin}` } });
  agent.addMessage({ id: randomUUID(), role: "user", content: "Summarise the weekly report" });
  const events = [];
  const decided = [];
  const { result, newMessages } = await agent.runAgent(
    { runId: randomUUID() },
    {
      onEvent({ event }) {
        events.push(event);
        if (event.type === "CUSTOM" && event.name === "herald.approval_required") decided.push(approve(event.value.approval_id));
      },
    },
  );
  await Promise.all(decided);
  const types = events.map((e) => (e.type === "CUSTOM" ? `CUSTOM:${e.name}` : e.type));
  assert.deepEqual(types, [
    "RUN_STARTED",
    "REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT",
    "REASONING_MESSAGE_END", "REASONING_END",
    "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END",
    "CUSTOM:herald.approval_required",
    "CUSTOM:herald.approval_decided",
    "TOOL_CALL_RESULT",
    "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END",
    "RUN_FINISHED",
  ]);
  const required = events.find((e) => e.name === "herald.approval_required").value;
  assert.equal(required.action, "send_email");
  assert.deepEqual(required.allowed_decisions, ["approve", "reject", "edit", "respond"]);
  assert.ok(required.deadline, "the approval's deadline");
  assert.equal(events.find((e) => e.name === "herald.approval_decided").value.decision, "approve");
  assert.equal(result, "done");
  const said = newMessages.find((m) => m.role === "assistant" && typeof m.content === "string" && m.content);
  assert.equal(said?.content, "Email sent to team@example.com. Subject: Summary. Anything else?");
  assert.ok(newMessages.some((m) => m.role === "assistant" && m.toolCalls?.[0]?.function.name === "send_email"));
});

test("a run rejoined after a Herald restart mid-run loses nothing and repeats nothing", async () => {
  const runId = randomUUID();
  const threadId = randomUUID();
  const res = await fetch(`${base}/api/v1/agui/${AGENT}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${admin}`, "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(input(runId, threadId, "Plan the offsite")),
  });
  const seen = [];
  let approvalId;
  for await (const m of sse(res)) {
    seen.push(m);
    if (m.event.name === "herald.approval_required") {
      approvalId = m.event.value.approval_id;
      break;
    }
  }
  assert.ok(approvalId, "the run waits for a person");
  assert.equal(seen[0].event.type, "RUN_STARTED");
  assert.deepEqual([seen[0].event.runId, seen[0].event.threadId], [runId, threadId]);

  // Herald restarts while the run waits; the executor re-attaches by itself.
  await stopHerald();
  herald = await startHerald();

  const again = await fetch(`${base}/api/v1/agui/runs/${runId}`, {
    headers: { Authorization: `Bearer ${admin}`, "Last-Event-ID": seen.at(-1).id },
  });
  let decided;
  for await (const m of sse(again)) {
    seen.push(m);
    if (!decided) decided = approve(approvalId);
    if (m.event.type === "RUN_FINISHED" || m.event.type === "RUN_ERROR") break;
  }
  await decided;
  const last = seen.at(-1).event;
  assert.equal(last.type, "RUN_FINISHED", JSON.stringify(last));

  // The whole run from its start, as a fresh page would rejoin it.
  const full = [];
  for await (const m of sse(await fetch(`${base}/api/v1/agui/runs/${runId}?token=${admin}`))) full.push(m);
  assert.deepEqual(seen.map((m) => m.id), full.map((m) => m.id), "the same ids, once each, in order");
  assert.deepEqual(seen.map((m) => m.event), full.map((m) => m.event));
  assert.equal(new Set(full.map((m) => m.id)).size, full.length);
  assert.ok(full.some((m) => m.event.name === "herald.executor_detached" || m.event.name === "herald.executor_reattached"));

  // And through the client itself, which verifies the rejoined stream.
  const rejoin = new RejoinAgent({ url: `${base}/api/v1/agui/runs/${runId}`, headers: { Authorization: `Bearer ${admin}` }, threadId });
  const types = [];
  const { result } = await rejoin.runAgent({ runId }, { onEvent: ({ event }) => types.push(event.type) });
  assert.equal(result, "done");
  assert.equal(types.length, full.length);
});

test("bad input, a reused runId and an unknown run are clear HTTP errors", async () => {
  const post = (body, auth = `Bearer ${admin}`) =>
    fetch(`${base}/api/v1/agui/${AGENT}`, { method: "POST", headers: { Authorization: auth, "Content-Type": "application/json" }, body });
  assert.equal((await post("{", `Bearer ${admin}`)).status, 400);
  assert.equal((await post(JSON.stringify({ runId: "r" }))).status, 400);
  assert.equal((await post(JSON.stringify(input("r", "t", "x")), "Bearer nope")).status, 401);
  const first = await post(JSON.stringify(input("same-run", "t", "x")));
  assert.equal(first.status, 200);
  await first.body.cancel();
  const repeated = await post(JSON.stringify(input("same-run", "t", "x")));
  assert.equal(repeated.status, 409);
  assert.match((await repeated.json()).error.message, /rejoin/);
  const missing = await fetch(`${base}/api/v1/agui/runs/nope`, { headers: { Authorization: `Bearer ${admin}` } });
  assert.equal(missing.status, 404);
  // The run left waiting for a decision: cancel it so the executor is idle.
  const run = (await api("GET", "/executions?limit=1")).executions[0];
  await api("POST", `/executions/${run.id}/cancel`, { reason: "test over" });
});
