// Types of herald-client/react.
import type { ReactNode, ReactElement } from "react";
import type {
  Approval,
  ConnectionState,
  EventHandlers,
  HeraldClient,
  HeraldClientOptions,
  HeraldError,
  HeraldEvent,
  Task,
  DecidedReply,
} from "./herald-client";

export declare function HeraldProvider(props: { client: HeraldClient; children?: ReactNode }): ReactElement;

export interface HeraldConnection {
  client: HeraldClient;
  state: ConnectionState;
  /** Why the client closed by itself (a bad or expired token), or null. */
  error: HeraldError | null;
}

/** With options: this tree's one client (connected while mounted). Without: the provider's. */
export declare function useHerald(options?: HeraldClientOptions): HeraldConnection;

export interface UseChannelOptions {
  afterSeq?: number;
  on?: EventHandlers;
  onEvent?: (event: HeraldEvent) => void;
  /** How many of the latest events to return (default 100; 0 keeps none). */
  keep?: number;
}

export declare function useChannel(
  channel: string | null,
  options?: UseChannelOptions,
): { events: HeraldEvent[]; lastSeq: number | null; error: HeraldError | null };

/** The task (null until its snapshot), then kept current by its events. */
export declare function useTask(taskId: string | null): { task: Task | null; error: HeraldError | null };

export declare function applyTaskEvent(task: Task | null, event: HeraldEvent | { type: "task_snapshot"; data: Task; seq: number }): Task | null;

export interface UseApprovals {
  /** Pending approvals, oldest first. */
  approvals: Approval[];
  loading: boolean;
  error: HeraldError | null;
  approve(approvalId: string, message?: string): Promise<DecidedReply>;
  reject(approvalId: string, message?: string): Promise<DecidedReply>;
  edit(approvalId: string, args: unknown, message?: string): Promise<DecidedReply>;
  respond(approvalId: string, text: string): Promise<DecidedReply>;
}

export declare function useApprovals(): UseApprovals;
