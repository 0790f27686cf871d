// Types for herald-client.js (served at /herald-client.d.ts).

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export declare const State: Readonly<{
  CONNECTING: "connecting";
  OPEN: "open";
  RECONNECTING: "reconnecting";
  CLOSED: "closed";
}>;

export declare const CloseCode: Readonly<{
  SERVICE_RESTART: 1012;
  TOKEN_EXPIRED: 4001;
  PING_TIMEOUT: 4002;
  SLOW_CONSUMER: 4008;
}>;

export declare class HeraldError extends Error {
  /** Herald's code (`invalid_argument`, `not_found`, `failed_precondition`, `permission_denied`,
   * `resource_exhausted`, …) or the client's (`unauthenticated`, `token_expired`,
   * `token_refresh_failed`, `connection_lost`, `timeout`, `closed`). */
  readonly code: string;
  constructor(code: string, message: string);
}

export type TaskStatus = "pending" | "in_progress" | "completed" | "failed" | "cancelled";
export type AgentStatus = "created" | "online" | "busy" | "idle" | "offline";
export type ExecutionStatus =
  | "queued"
  | "running"
  | "awaiting_approval"
  | "detached"
  | "completed"
  | "failed"
  | "cancelled";
export type DecisionKind = "approve" | "reject" | "edit" | "respond";

export interface Task {
  id: string;
  tenant: string;
  title: string;
  description: string;
  agent_id: string | null;
  status: TaskStatus;
  progress: number;
  step: string;
  tool: string;
  message: string;
  error: string;
  result: string;
  created_by: string;
  created_at: string;
  updated_at: string;
  completed_at: string | null;
  last_seq: number;
}

export interface Agent {
  id: string;
  tenant: string;
  name: string;
  type: string;
  capabilities: string[];
  status: AgentStatus;
  created_at: string;
  last_seen_at: string;
  last_seq: number;
}

export interface Decision {
  kind: DecisionKind;
  arguments: unknown;
  message: string;
  decided_by: string;
  decided_at: string;
  by_deadline: boolean;
}

export interface Approval {
  id: string;
  tenant: string;
  execution_id: string;
  tool_call_id: string;
  action: string;
  arguments: unknown;
  allowed_decisions: DecisionKind[];
  arguments_schema: unknown | null;
  deadline: string | null;
  deadline_decision: DecisionKind;
  requested_by: string;
  requested_at: string;
  decision: Decision | null;
  last_seq: number;
}

export interface TaskCreatedData {
  task_id: string;
  title: string;
  description: string;
  agent_id: string | null;
  status: TaskStatus;
}
export interface TaskProgressData {
  task_id: string;
  status: TaskStatus;
  progress: number;
  step: string;
  tool: string;
  message: string;
  error: boolean;
}
export interface TaskCompletedData { task_id: string; status: TaskStatus; progress: number; result: string }
export interface TaskFailedData { task_id: string; status: TaskStatus; progress: number; error: string }
export interface TaskCancelledData { task_id: string; status: TaskStatus; progress: number; reason: string }
export interface AgentUpdateData {
  agent_id: string;
  status: AgentStatus;
  name: string;
  type: string;
  capabilities: string[];
}

/** Every execution event has these; the rest depends on the type. */
export interface ExecutionEventData {
  execution_id: string;
  status: ExecutionStatus;
  [field: string]: unknown;
}
export interface ThinkingData extends ExecutionEventData { text: string }
export interface MessageDeltaData extends ExecutionEventData { text: string }
export interface ToolCallData extends ExecutionEventData { tool_call_id: string; tool: string; arguments: unknown }
export interface ToolResultData extends ExecutionEventData { tool_call_id: string; result: unknown; is_error: boolean }
export interface SubagentData extends ExecutionEventData { name: string; detail: string }
export interface CompleteData extends ExecutionEventData { output: string }
export interface ExecutionErrorData extends ExecutionEventData { message: string }
export interface ExecutionStatusData extends ExecutionEventData {
  agent_id: string;
  task_id: string | null;
  detail?: string | null;
  output?: string | null;
  error?: string | null;
}

export interface ApprovalRequiredData {
  approval_id: string;
  execution_id: string;
  tool_call_id: string;
  action: string;
  arguments: unknown;
  allowed_decisions: DecisionKind[];
  arguments_schema: unknown | null;
  deadline: string | null;
  deadline_decision: DecisionKind;
  requested_by: string;
}
export interface ApprovalDecidedData {
  approval_id: string;
  execution_id: string;
  tool_call_id: string;
  action: string;
  decision: DecisionKind;
  arguments: unknown;
  message: string;
  decided_by: string;
  decided_at: string;
  by_deadline: boolean;
}

/** Event type → its `data`. */
export interface EventDataMap {
  task_snapshot: Task;
  task_created: TaskCreatedData;
  task_progress: TaskProgressData;
  task_completed: TaskCompletedData;
  task_failed: TaskFailedData;
  task_cancelled: TaskCancelledData;
  agent_update: AgentUpdateData;
  execution_created: ExecutionStatusData;
  execution_started: ExecutionStatusData;
  thinking: ThinkingData;
  tool_call: ToolCallData;
  tool_result: ToolResultData;
  message_delta: MessageDeltaData;
  subagent_start: SubagentData;
  subagent_end: SubagentData;
  complete: CompleteData;
  error: ExecutionErrorData;
  cancel_requested: ExecutionStatusData;
  cancelled: ExecutionStatusData;
  executor_detached: ExecutionStatusData;
  executor_reattached: ExecutionStatusData;
  approval_required: ApprovalRequiredData;
  approved: ApprovalDecidedData;
  rejected: ApprovalDecidedData;
  edited: ApprovalDecidedData;
  responded: ApprovalDecidedData;
}

export type EventType = keyof EventDataMap;

/** One event as Herald sends it. `seq` is global and grows; per channel, events arrive in order. */
export interface HeraldEvent<T extends EventType = EventType> {
  type: T;
  seq: number;
  channel: string;
  /** RFC 3339 with milliseconds (absent on `task_snapshot`). */
  timestamp?: string;
  /** The token subject that caused it, or `herald`. */
  actor?: string;
  data: EventDataMap[T];
}

export type EventHandlers = { [T in EventType]?: (event: HeraldEvent<T>) => void };

export interface SubscribeOptions {
  /** Resume after this seq: every later event of the channel arrives once, in order. */
  afterSeq?: number;
  /** Typed callbacks per event type. */
  on?: EventHandlers;
  /** Every event of the channel. */
  onEvent?: (event: HeraldEvent) => void;
  /** Each time Herald confirms the subscription (after every reconnect too). */
  onSubscribed?: (reply: { type: "subscribed"; channel: string; after_seq?: number }) => void;
  /** Herald refused the channel (unknown, another tenant's, not allowed); the subscription is dropped. */
  onError?: (error: HeraldError) => void;
  /** Retention removed events after the cursor: the subscription goes on from a snapshot (task:,
   * execution:) or live; resync what was derived from the missed events. */
  onCursorExpired?: (info: CursorExpired) => void;
}

/** Herald's answer to a cursor older than the oldest event it keeps (HERALD_RETENTION). */
export interface CursorExpired {
  type: "cursor_expired";
  channel: string;
  oldest_seq: number;
}

export interface Subscription {
  readonly channel: string;
  /** The last seq delivered on this channel, or null. */
  readonly lastSeq: number | null;
  unsubscribe(): void;
}

export interface StateChange {
  state: ConnectionState;
  /** Failed attempts since the last successful connection. */
  attempt: number;
  /** Set when the client closed by itself (bad or expired token). */
  error: HeraldError | null;
  /** Milliseconds until the next attempt (state `reconnecting`). */
  delay?: number;
  /** The close code that ended the previous connection. */
  code?: number;
  /** Why a refused handshake is retried (state `reconnecting`): `down` when Herald cannot be
   * reached, `unknown` when it answers but the token check could not tell (a refused token
   * ends in `closed` with `error.code === "unauthenticated"` instead). */
  cause?: "down" | "unknown";
}

export interface HeraldClientOptions {
  /** `ws(s)://host/ws`; defaults to the page's own host. */
  url?: string;
  /** The JWT. Either this or `getToken`. */
  token?: string;
  /** Fetches a fresh JWT: called before the token expires (the socket stays open),
   * after a 4001 close, and when connecting with an expired token. */
  getToken?: () => string | Promise<string>;
  /** Seconds before `exp` to refresh (default 60; at most half the token's lifetime). */
  refreshLeadSeconds?: number;
  /** Backoff: delay = min(maxDelay, initialDelay × factor^attempt), then half of it plus up to half at random.
   * Defaults: 500 ms, 5 s, 2. */
  reconnect?: { initialDelay?: number; maxDelay?: number; factor?: number };
  /** Application-level ping every N ms (default 20000; 0 turns it off). */
  pingInterval?: number;
  /** Reconnects when a ping is not answered within N ms (default 10000). */
  pingTimeout?: number;
  /** Rejects a request unanswered after N ms (default 15000; 0 = never). */
  requestTimeout?: number;
  /** `protocol` (default: `Sec-WebSocket-Protocol: bearer, <jwt>`) or `query` (`?token=`). */
  tokenTransport?: "protocol" | "query";
  /** Where to ask whether a refused handshake means a bad token (default
   * `/api/v1/websocket/status` on the same host; null turns the check off). */
  authCheckUrl?: string | null;
  /** Connect at once when a token is given (default true). */
  autoConnect?: boolean;
  onStateChange?: (change: StateChange) => void;
  onError?: (error: HeraldError) => void;
  /** Any channel's cursor expired (see SubscribeOptions.onCursorExpired). */
  onCursorExpired?: (info: CursorExpired) => void;
  /** For tests or other runtimes. */
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

export interface DecidedReply {
  type: "decided";
  approval_id: string;
  execution_id: string;
  decision: Decision;
}
export interface ExecuteAccepted { type: "execute_accepted"; execution_id: string; status: ExecutionStatus }
export interface CancelAccepted { type: "cancel_accepted"; execution_id: string; status: ExecutionStatus }

/** The claims of a JWT, read without verifying it. */
export declare function decodeToken(token: string): { exp?: number; iat?: number; sub?: string; [claim: string]: unknown } | null;

export declare class HeraldClient {
  constructor(options?: HeraldClientOptions);
  readonly url: string;
  readonly state: ConnectionState;
  /** Why the client closed by itself, or null. */
  readonly error: HeraldError | null;
  readonly token: string | null;
  readonly connectionId: string | null;
  connect(token?: string): this;
  /** Closes for good; queued and unanswered requests are rejected with code `closed`. */
  close(): void;
  on(name: "state", fn: (change: StateChange) => void): () => void;
  on(name: "error", fn: (error: HeraldError) => void): () => void;
  on(name: "event", fn: (event: HeraldEvent) => void): () => void;
  on(name: "frame", fn: (frame: Record<string, unknown>) => void): () => void;
  on(name: "token", fn: (token: string) => void): () => void;
  on(name: "cursor_expired", fn: (info: CursorExpired) => void): () => void;
  subscribe(channel: string, options?: SubscribeOptions): Subscription;
  lastSeq(channel: string): number | null;
  /** Runs an agent; Herald subscribes this connection to `execution:{id}` from its first event. */
  execute(
    agentId: string,
    input: unknown,
    options?: { taskId?: string } & Pick<SubscribeOptions, "on" | "onEvent" | "onSubscribed" | "onError">,
  ): Promise<ExecuteAccepted>;
  cancel(executionId: string, reason?: string): Promise<CancelAccepted>;
  approve(approvalId: string, message?: string): Promise<DecidedReply>;
  reject(approvalId: string, message?: string): Promise<DecidedReply>;
  edit(approvalId: string, args: unknown, message?: string): Promise<DecidedReply>;
  respond(approvalId: string, text: string): Promise<DecidedReply>;
  ping(): Promise<{ type: "pong" }>;
  refreshToken(): Promise<{ type: "token_refreshed"; expires_at: number } | null>;
  setToken(token: string): void;
  /** Sends any client frame and resolves with Herald's reply. */
  request(frame: { type: string; [field: string]: unknown }): Promise<Record<string, unknown>>;
}

export default HeraldClient;
