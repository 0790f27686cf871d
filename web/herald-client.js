// herald-client.js — a dependency-free browser client for Herald's `/ws` bridge.
//
// Served by Herald at /herald-client.js (types: /herald-client.d.ts). It keeps
// one WebSocket, reconnects with exponential backoff and jitter, and resumes
// every channel from the last `seq` it delivered on that channel, so the
// application sees every event exactly once, in order, across dropped
// connections and Herald restarts.
//
// Why per-channel cursors: `seq` is global, and Herald guarantees order only
// within a channel. A replay on one channel can interleave with live events of
// another, so a single connection-wide cursor could skip events.

/** Connection states, for a status indicator. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

/** Close codes Herald uses on `/ws` (README "Close codes"). */
export const CloseCode = Object.freeze({
  SERVICE_RESTART: 1012,
  TOKEN_EXPIRED: 4001,
  PING_TIMEOUT: 4002,
  SLOW_CONSUMER: 4008,
});

/** An error from Herald (`{"type":"error","code","message"}`) or from the client itself. */
export class HeraldError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "HeraldError";
    /** Herald's code (`invalid_argument`, `failed_precondition`, …) or the client's
     * (`unauthenticated`, `token_expired`, `connection_lost`, `timeout`, `closed`). */
    this.code = code;
  }
}

// Frames that answer a client frame. Herald answers every client frame with
// exactly one of these, in the order the frames were sent, so replies are
// matched to requests first-in, first-out.
const REPLY_TYPES = new Set([
  "subscribed",
  "unsubscribed",
  "pong",
  "token_refreshed",
  "execute_accepted",
  "cancel_accepted",
  "decided",
  "error",
]);

const DEFAULTS = {
  // Capped near 5 s (Socket.IO's default): a page must not stay away long
  // after Herald is back.
  reconnect: { initialDelay: 500, maxDelay: 5000, factor: 2 },
  refreshLeadSeconds: 60,
  pingInterval: 20000,
  pingTimeout: 10000,
  requestTimeout: 15000,
  tokenTransport: "protocol",
};

// setTimeout takes a signed 32-bit delay; longer ones fire at once.
const MAX_TIMER = 2 ** 31 - 1;

/**
 * The claims of a JWT, read without verifying it (only Herald verifies).
 * @param {string} token
 * @returns {{exp?: number, iat?: number, sub?: string, [k: string]: unknown} | null}
 */
export function decodeToken(token) {
  try {
    const part = String(token).split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function defaultUrl() {
  if (typeof location === "undefined") throw new Error("HeraldClient needs options.url outside a page");
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

// The HTTP endpoint that tells a refused handshake's cause: a browser only
// sees "closed with 1006" when Herald answers the upgrade with 403.
function defaultAuthCheckUrl(wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  u.pathname = "/api/v1/websocket/status";
  u.search = "";
  return u.toString();
}

export class HeraldClient {
  /** @param {import("./herald-client").HeraldClientOptions} options */
  constructor(options = {}) {
    this.url = options.url || defaultUrl();
    this.authCheckUrl = options.authCheckUrl === undefined ? defaultAuthCheckUrl(this.url) : options.authCheckUrl;
    this.getToken = options.getToken || null;
    this.reconnectOptions = { ...DEFAULTS.reconnect, ...(options.reconnect || {}) };
    this.refreshLeadSeconds = options.refreshLeadSeconds ?? DEFAULTS.refreshLeadSeconds;
    this.pingInterval = options.pingInterval ?? DEFAULTS.pingInterval;
    this.pingTimeout = options.pingTimeout ?? DEFAULTS.pingTimeout;
    this.requestTimeout = options.requestTimeout ?? DEFAULTS.requestTimeout;
    this.tokenTransport = options.tokenTransport || DEFAULTS.tokenTransport;
    this.WebSocketImpl = options.WebSocket || globalThis.WebSocket;
    this.fetchImpl = options.fetch || globalThis.fetch?.bind(globalThis);

    this._token = options.token || null;
    /** @type {import("./herald-client").ConnectionState} */
    this._state = State.CLOSED;
    this._error = null;
    this._ws = null;
    this._opened = false; // the current socket got Herald's `connection` frame
    this._attempt = 0; // failed attempts since the last successful connection
    this._retryTimer = null;
    this._refreshTimer = null;
    this._pingTimer = null;
    this._closedByApp = true;
    this._listeners = new Map();
    /** @type {Map<string, {lastSeq: number|null, handlers: Set<object>, backlog: object[]|null, confirmed: boolean, expired?: boolean}>} */
    this._channels = new Map();
    this._highestSeq = 0; // the highest seq delivered on any channel (a fallback cursor only)
    this._queue = []; // requests waiting for an open socket
    this._inflight = []; // requests sent, waiting for their reply, in order
    this._connectionId = null;
    this._onOnline = () => {
      if (this._state === State.RECONNECTING) this._retryNow();
    };
    if (options.onStateChange) this.on("state", options.onStateChange);
    if (options.onError) this.on("error", options.onError);
    if (options.onCursorExpired) this.on("cursor_expired", options.onCursorExpired);
    if (options.autoConnect !== false && this._token) this.connect();
  }

  /** The connection state: connecting, open, reconnecting or closed. */
  get state() {
    return this._state;
  }

  /** Why the client closed by itself (a bad or expired token), or null. */
  get error() {
    return this._error;
  }

  /** The current token. */
  get token() {
    return this._token;
  }

  /** Herald's id for the current connection, or null. */
  get connectionId() {
    return this._connectionId;
  }

  /** The last seq delivered on `channel`, or null if none yet. */
  lastSeq(channel) {
    return this._channels.get(channel)?.lastSeq ?? null;
  }

  /**
   * Listens to `state` ({state, attempt, delay, code, error}), `error` (HeraldError),
   * `event` (every event frame delivered), `frame` (every raw frame) or `token`
   * (after a refresh). Returns a function that stops listening.
   */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name)?.delete(fn);
  }

  _emit(name, value) {
    for (const fn of [...(this._listeners.get(name) || [])]) {
      try {
        fn(value);
      } catch (e) {
        // A broken listener must not break delivery to the others.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  _setState(state, extra = {}) {
    const changed = state !== this._state;
    this._state = state;
    if (changed || extra.attempt !== undefined) {
      this._emit("state", { state, attempt: this._attempt, error: this._error, ...extra });
    }
  }

  /** Opens the connection (again, after close()). Optionally with a new token. */
  connect(token) {
    if (token) this._token = token;
    if (!this._token && !this.getToken) throw new Error("HeraldClient needs a token or getToken");
    if (this._ws) {
      // Already connected: start over on a new socket (e.g. with a new token).
      const old = this._ws;
      this._ws = null;
      this._detach(old);
      old.close(1000, "reconnecting");
      this._opened = false;
      this._failInflight(new HeraldError("connection_lost", "the client reconnected before Herald answered"));
    }
    clearTimeout(this._retryTimer);
    this._closedByApp = false;
    this._error = null;
    this._attempt = 0;
    if (typeof addEventListener === "function") addEventListener("online", this._onOnline);
    this._open(State.CONNECTING);
    return this;
  }

  /** Closes for good: no reconnect; queued and unanswered requests are rejected. */
  close() {
    this._closedByApp = true;
    this._shutdown(new HeraldError("closed", "the client was closed"));
    this._setState(State.CLOSED);
  }

  _shutdown(reason) {
    clearTimeout(this._retryTimer);
    clearTimeout(this._refreshTimer);
    this._stopPing();
    if (typeof removeEventListener === "function") removeEventListener("online", this._onOnline);
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      this._detach(ws);
      try {
        ws.close(1000, "client closed");
      } catch {
        /* already closing */
      }
    }
    this._failInflight(reason);
    for (const req of this._queue.splice(0)) req.reject(reason);
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
  }

  async _open(state) {
    this._setState(state);
    if (this._tokenExpired() && this.getToken) {
      // An expired token would only be refused: fetch a fresh one first.
      if (!(await this._fetchToken())) return this._scheduleReconnect();
    } else if (this._tokenExpired()) {
      return this._fatal(new HeraldError("token_expired", "the token has expired; sign in again"));
    }
    if (this._closedByApp) return;
    let ws;
    try {
      if (this.tokenTransport === "query") {
        const u = new URL(this.url);
        u.searchParams.set("token", this._token);
        ws = new this.WebSocketImpl(u.toString());
      } else {
        // Keeps the token out of URLs (and so out of access logs).
        ws = new this.WebSocketImpl(this.url, ["bearer", this._token]);
      }
    } catch (e) {
      return this._fatal(new HeraldError("invalid_url", String(e && e.message ? e.message : e)));
    }
    this._ws = ws;
    this._opened = false;
    ws.onmessage = (m) => this._onMessage(ws, m);
    ws.onclose = (ev) => this._onClose(ws, ev);
    ws.onerror = () => {}; // onclose follows and carries what there is to know
  }

  _tokenExpired() {
    const exp = decodeToken(this._token)?.exp;
    return typeof exp === "number" && exp * 1000 <= Date.now();
  }

  async _fetchToken() {
    if (!this.getToken) return false;
    try {
      const token = await this.getToken();
      if (!token) throw new Error("getToken returned no token");
      this._token = token;
      this._emit("token", token);
      return true;
    } catch (e) {
      this._emit("error", new HeraldError("token_refresh_failed", `could not get a new token: ${e?.message || e}`));
      return false;
    }
  }

  _fatal(error) {
    this._error = error;
    this._closedByApp = true;
    this._shutdown(error);
    this._emit("error", error);
    this._setState(State.CLOSED, { error });
  }

  _onMessage(ws, m) {
    if (ws !== this._ws) return;
    let f;
    try {
      f = JSON.parse(m.data);
    } catch {
      return; // Herald only sends JSON; ignore anything else
    }
    this._emit("frame", f);
    if (f.type === "connection" && !this._opened) return this._onWelcome(f);
    // Event frames (and task snapshots) carry a seq and a channel; replies never do.
    // (An execution's `error` event is an event, not an error reply.)
    // (`subscribed` to a live channel carries the seq live delivery starts
    // after: a reply, not an event.)
    if (typeof f.seq === "number" && typeof f.channel === "string" && f.type !== "subscribed") return this._onEvent(f);
    if (f.type === "cursor_expired") return this._onCursorExpired(f);
    if (REPLY_TYPES.has(f.type)) return this._onReply(f);
  }

  /** Herald's retention removed events after this channel's cursor: it goes on
   * as a fresh subscription (a snapshot first on task:/execution:), and the
   * application resyncs whatever it derived from the missed events. */
  _onCursorExpired(f) {
    const ch = this._channels.get(f.channel);
    if (!ch) return;
    ch.lastSeq = null;
    ch.expired = true;
    for (const h of ch.handlers) h.onCursorExpired?.(f);
    this._emit("cursor_expired", f);
  }

  _onWelcome(f) {
    this._opened = true;
    this._connectionId = f.connection_id || null;
    this._attempt = 0;
    this._error = null;
    this._setState(State.OPEN);
    // Resume every channel first, so its replay starts before anything else.
    for (const [channel, ch] of this._channels) this._sendSubscribe(channel, ch);
    for (const req of this._queue.splice(0)) this._transmit(req);
    this._scheduleRefresh();
    this._startPing();
  }

  _sendSubscribe(channel, ch) {
    ch.confirmed = false;
    const frame = { type: "subscribe", channel };
    // No cursor yet: a task channel answers with a snapshot; for others, the
    // highest seq delivered anywhere is the best lower bound we have.
    const after = ch.lastSeq ?? (this._highestSeq > 0 && !channel.startsWith("task:") ? this._highestSeq : null);
    if (after !== null) frame.after_seq = after;
    this._transmit({
      frame,
      internal: true,
      resolve: (reply) => {
        ch.confirmed = true;
        if (ch.expired) {
          // Resynced: the live start (or the snapshot that follows) is the new cursor.
          ch.expired = false;
          if (typeof reply.seq === "number") ch.lastSeq = reply.seq;
          for (const h of ch.handlers) h.onSubscribed?.(reply);
          return;
        }
        if (ch.lastSeq === null && after !== null) ch.lastSeq = after;
        if (ch.lastSeq === null && typeof reply.seq === "number") ch.lastSeq = reply.seq;
        if (ch.lastSeq === null && this._highestSeq > 0 && !channel.startsWith("task:")) {
          // Live-only subscription: everything delivered before this reply was
          // committed before it started, and later events have a greater seq,
          // so this is a safe cursor for a reconnect.
          ch.lastSeq = this._highestSeq;
        }
        for (const h of ch.handlers) h.onSubscribed?.(reply);
      },
      reject: (err) => {
        if (err.code === "connection_lost" || err.code === "closed") return; // resubscribed on reconnect
        // Herald refused the channel (unknown, not allowed, not found): drop it.
        this._channels.delete(channel);
        for (const h of ch.handlers) h.onError?.(err);
        this._emit("error", err);
      },
    });
  }

  _onEvent(f) {
    const ch = this._channels.get(f.channel);
    if (!ch) return; // unsubscribed meanwhile
    if (ch.lastSeq !== null && f.seq <= ch.lastSeq) return; // seen before this reconnect
    ch.lastSeq = f.seq;
    if (f.seq > this._highestSeq) this._highestSeq = f.seq;
    if (ch.handlers.size === 0) {
      // Herald subscribed us (execute): keep events until the app listens.
      if (ch.backlog && ch.backlog.length < 10000) ch.backlog.push(f);
      return;
    }
    this._deliver(ch, f);
  }

  _deliver(ch, f) {
    for (const h of [...ch.handlers]) {
      try {
        h.on?.[f.type]?.(f);
        h.onEvent?.(f);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
    this._emit("event", f);
  }

  _onReply(f) {
    if (f.type === "subscribed" || f.type === "unsubscribed") {
      // `execute` is answered twice: execute_accepted, then Herald's own
      // subscription to the execution, which no request of ours waits for.
      const head = this._inflight[0];
      if (!head || head.frame.type !== f.type.slice(0, -1) || head.frame.channel !== f.channel) {
        const ch = this._channels.get(f.channel);
        if (ch && f.type === "subscribed") ch.confirmed = true;
        return;
      }
    }
    if (f.type === "execute_accepted") {
      // Registered before anything else runs: the execution's events follow
      // at once, even when the request itself has timed out meanwhile.
      const channel = `execution:${f.execution_id}`;
      if (!this._channels.has(channel)) {
        this._channels.set(channel, { lastSeq: 0, handlers: new Set(), backlog: [], confirmed: false });
      }
    }
    const req = this._inflight.shift();
    if (!req) return;
    clearTimeout(req.timer);
    if (req.done) return; // timed out earlier; this is its late reply
    req.done = true;
    if (f.type === "error") req.reject(new HeraldError(f.code || "error", f.message || "error"));
    else req.resolve(f);
  }

  _transmit(req) {
    if (!this._ws || !this._opened) {
      this._queue.push(req);
      return;
    }
    try {
      this._ws.send(JSON.stringify(req.frame));
    } catch (e) {
      this._queue.push(req);
      return;
    }
    this._inflight.push(req);
    if (!req.internal && this.requestTimeout > 0) {
      req.timer = setTimeout(() => {
        if (req.done) return;
        req.done = true; // stays in the queue so its late reply is matched and dropped
        req.reject(new HeraldError("timeout", `no answer to '${req.frame.type}' within ${this.requestTimeout} ms`));
      }, this.requestTimeout);
    }
  }

  _failInflight(reason) {
    for (const req of this._inflight.splice(0)) {
      clearTimeout(req.timer);
      if (req.done) continue;
      req.done = true;
      // Sent but unanswered: it may or may not have been applied. Decisions
      // are safe to repeat (a second one is refused, naming who decided).
      req.reject(reason);
    }
  }

  /** Sends a client frame and resolves with Herald's reply (rejects with a HeraldError). */
  request(frame) {
    if (this._closedByApp && this._state === State.CLOSED) {
      return Promise.reject(new HeraldError("closed", "the client is closed"));
    }
    return new Promise((resolve, reject) => this._transmit({ frame, resolve, reject }));
  }

  _onClose(ws, ev) {
    if (ws !== this._ws) return;
    this._detach(ws);
    this._ws = null;
    this._connectionId = null;
    this._stopPing();
    clearTimeout(this._refreshTimer);
    const opened = this._opened;
    this._opened = false;
    this._failInflight(new HeraldError("connection_lost", `connection lost (${ev.code}) before Herald answered`));
    if (this._closedByApp) return;
    const code = ev.code;
    if (!opened) return this._handshakeFailed(code);
    if (code === CloseCode.TOKEN_EXPIRED) return this._tokenExpiredClose();
    // 1012 restart, 4008 too slow, 4002 no pong, 1006 dropped, 1011 error, …:
    // reconnect and resume every channel from its last seq.
    this._scheduleReconnect(code);
  }

  async _tokenExpiredClose() {
    // getToken may take a while (a person pasting a token): say the socket is gone meanwhile.
    if (this.getToken) this._setState(State.RECONNECTING, { code: CloseCode.TOKEN_EXPIRED });
    if (this.getToken && (await this._fetchToken())) {
      if (this._closedByApp) return;
      this._attempt = 0;
      return this._open(State.RECONNECTING);
    }
    if (this.getToken) return this._scheduleReconnect(CloseCode.TOKEN_EXPIRED);
    this._fatal(new HeraldError("token_expired", "the token has expired; sign in again"));
  }

  // The browser hides the HTTP status of a refused upgrade. Ask Herald over
  // HTTP whether the token is good: 401/403 means it never will be, so stop
  // instead of looping. Anything else is transient and retried, with its
  // cause in the state change: `down` when Herald cannot be reached at all,
  // `unknown` when it answers but the check could not tell (e.g. a page on an
  // origin Herald's CORS list does not name cannot read the answer).
  async _handshakeFailed(code) {
    let cause;
    if (this.authCheckUrl && this.fetchImpl) {
      let resp = null;
      try {
        resp = await this.fetchImpl(this.authCheckUrl, {
          headers: { authorization: `Bearer ${this._token}` },
          cache: "no-store",
        });
      } catch {
        resp = null; // unreachable, or an answer this origin may not read
      }
      if (this._closedByApp) return;
      if (resp && (resp.status === 401 || resp.status === 403)) {
        let message = "the token was refused";
        try {
          message = (await resp.json())?.error?.message || message;
        } catch {
          /* not JSON */
        }
        if (this.getToken && this._tokenExpired() && (await this._fetchToken())) {
          return this._scheduleReconnect(code);
        }
        return this._fatal(new HeraldError("unauthenticated", `Herald refused the token: ${message}`));
      }
      cause = resp || (await this._reachable()) ? "unknown" : "down";
      if (this._closedByApp) return;
    }
    this._scheduleReconnect(code, cause);
  }

  // An opaque `no-cors` request succeeds whenever Herald answers at all,
  // whatever its CORS headers; only a network failure rejects it.
  async _reachable() {
    try {
      await this.fetchImpl(this.authCheckUrl, { mode: "no-cors", cache: "no-store" });
      return true;
    } catch {
      return false;
    }
  }

  _backoff() {
    const { initialDelay, maxDelay, factor } = this.reconnectOptions;
    const base = Math.min(maxDelay, initialDelay * factor ** this._attempt);
    // "Equal jitter": at least half the step, so retries still spread out
    // after a restart that dropped every client at once.
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  _scheduleReconnect(code, cause) {
    if (this._closedByApp) return;
    clearTimeout(this._retryTimer);
    const delay = code === CloseCode.SLOW_CONSUMER && this._attempt === 0 ? 0 : this._backoff();
    this._attempt += 1;
    this._setState(State.RECONNECTING, { attempt: this._attempt, delay, code, cause });
    this._retryTimer = setTimeout(() => this._open(State.RECONNECTING), delay);
  }

  _retryNow() {
    clearTimeout(this._retryTimer);
    this._open(State.RECONNECTING);
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    if (!this.getToken) return;
    const claims = decodeToken(this._token);
    if (!claims || typeof claims.exp !== "number") return;
    let lead = this.refreshLeadSeconds;
    if (typeof claims.iat === "number") lead = Math.min(lead, (claims.exp - claims.iat) / 2);
    const delay = Math.max(0, (claims.exp - lead) * 1000 - Date.now());
    this._refreshTimer = setTimeout(() => this.refreshToken().catch(() => {}), Math.min(delay, MAX_TIMER));
  }

  /**
   * Gets a new token from `getToken` and hands it to Herald on the open
   * connection (`refresh_token`), so the socket outlives the old token.
   */
  async refreshToken() {
    const before = this._token;
    if (!(await this._fetchToken())) {
      // Try again later, but before the old token runs out.
      const exp = decodeToken(before)?.exp;
      const left = typeof exp === "number" ? exp * 1000 - Date.now() : 60000;
      clearTimeout(this._refreshTimer);
      this._refreshTimer = setTimeout(
        () => this.refreshToken().catch(() => {}),
        Math.max(1000, Math.min(30000, left / 2)),
      );
      throw new HeraldError("token_refresh_failed", "could not get a new token");
    }
    if (!this._opened) return null; // the next connection uses the new token
    try {
      const reply = await this.request({ type: "refresh_token", token: this._token });
      const oldExp = decodeToken(before)?.exp ?? 0;
      const newExp = decodeToken(this._token)?.exp ?? Infinity;
      if (newExp > oldExp) {
        this._scheduleRefresh();
      } else {
        // getToken handed back a token that expires no later: ask again later
        // instead of refreshing in a tight loop.
        clearTimeout(this._refreshTimer);
        const left = newExp * 1000 - Date.now();
        this._refreshTimer = setTimeout(
          () => this.refreshToken().catch(() => {}),
          Math.max(1000, Math.min(30000, left / 2)),
        );
      }
      return reply;
    } catch (e) {
      this._emit("error", e);
      throw e;
    }
  }

  /** Replaces the token (e.g. after a new sign-in); an open connection is told. */
  setToken(token) {
    this._token = token;
    if (this._opened) {
      this.request({ type: "refresh_token", token })
        .then(() => this._scheduleRefresh())
        .catch((e) => this._emit("error", e));
    }
  }

  _startPing() {
    this._stopPing();
    if (!(this.pingInterval > 0)) return;
    const ws = this._ws;
    this._pingTimer = setInterval(() => {
      if (ws !== this._ws || !this._opened) return;
      // A half-open TCP connection can look open for minutes; an answered
      // ping proves the path both ways.
      const timer = setTimeout(() => {
        if (ws === this._ws) ws.close(4002, "no pong");
        this._onClose(ws, { code: CloseCode.PING_TIMEOUT });
      }, this.pingTimeout);
      this._transmit({
        frame: { type: "ping" },
        internal: true,
        resolve: () => clearTimeout(timer),
        reject: () => clearTimeout(timer),
      });
    }, this.pingInterval);
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  /**
   * Subscribes to a channel. `afterSeq` resumes after that seq (every later
   * event arrives once, in order); without it a `task:{id}` channel starts
   * with a `task_snapshot`, and other channels with live events.
   * Handlers: `on: {task_progress(ev) {…}, …}`, `onEvent`, `onSubscribed`, `onError`,
   * `onCursorExpired` (Herald no longer had every event after `afterSeq`: resync).
   * Several subscriptions to one channel share one server subscription.
   */
  subscribe(channel, options = {}) {
    const handler = { on: options.on, onEvent: options.onEvent, onSubscribed: options.onSubscribed, onError: options.onError,
                      onCursorExpired: options.onCursorExpired };
    let ch = this._channels.get(channel);
    const fresh = !ch;
    if (fresh) {
      ch = { lastSeq: options.afterSeq ?? null, handlers: new Set(), backlog: null, confirmed: false };
      this._channels.set(channel, ch);
    }
    ch.handlers.add(handler);
    if (ch.backlog) {
      const backlog = ch.backlog;
      ch.backlog = null;
      for (const f of backlog) if (options.afterSeq == null || f.seq > options.afterSeq) this._deliver(ch, f);
    }
    if (fresh && this._opened) this._sendSubscribe(channel, ch);
    const client = this;
    return {
      channel,
      get lastSeq() {
        return ch.lastSeq;
      },
      unsubscribe() {
        ch.handlers.delete(handler);
        if (ch.handlers.size > 0 || client._channels.get(channel) !== ch) return;
        client._channels.delete(channel);
        if (client._opened) client.request({ type: "unsubscribe", channel }).catch(() => {});
      },
    };
  }

  /** Runs an agent. Herald subscribes this connection to `execution:{id}` from its start;
   * pass handlers here (or subscribe to the channel later: nothing is lost meanwhile). */
  async execute(agentId, input, options = {}) {
    const frame = { type: "execute", agent_id: agentId, input: input ?? null };
    if (options.taskId) frame.task_id = options.taskId;
    const reply = await this.request(frame);
    if (options.on || options.onEvent) this.subscribe(`execution:${reply.execution_id}`, options);
    return reply;
  }

  /** Asks the executor to cancel an execution. */
  cancel(executionId, reason = "") {
    return this.request({ type: "cancel", execution_id: executionId, reason });
  }

  /** Approves a pending approval. */
  approve(approvalId, message = "") {
    return this.request({ type: "approve", approval_id: approvalId, message });
  }

  /** Rejects a pending approval. */
  reject(approvalId, message = "") {
    return this.request({ type: "reject", approval_id: approvalId, message });
  }

  /** Approves with replaced arguments (checked against the request's schema). */
  edit(approvalId, args, message = "") {
    return this.request({ type: "edit", approval_id: approvalId, arguments: args, message });
  }

  /** Answers the agent with text instead of running the tool. */
  respond(approvalId, text) {
    return this.request({ type: "respond", approval_id: approvalId, message: text });
  }

  /** Round trip to Herald. */
  ping() {
    return this.request({ type: "ping" });
  }
}

export default HeraldClient;
