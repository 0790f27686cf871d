"""The SDK's result types: plain dataclasses built from Herald's protobuf messages.
Enums are snake_case strings (``"in_progress"``, ``"approve"``), JSON text fields
are parsed (a value that is not JSON stays a ``str``), timestamps are aware
``datetime``s."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ._wire import enum_name, from_json_text, ts
from .v1 import agents_pb2, events_pb2, executions_pb2, tasks_pb2

DecisionKindName = Literal["approve", "reject", "edit", "respond"]


def _status(v: int) -> str:
    return enum_name(v, events_pb2.TaskStatus, "TASK_STATUS_")


def _agent_status(v: int) -> str:
    return enum_name(v, events_pb2.AgentStatus, "AGENT_STATUS_")


def _exec_status(v: int) -> str:
    return enum_name(v, executions_pb2.ExecutionStatus, "EXECUTION_STATUS_")


def _kind(v: int) -> str:
    return enum_name(v, executions_pb2.DecisionKind, "DECISION_KIND_")


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    description: str
    agent_id: str | None
    status: str
    progress: int
    step: str
    tool: str
    message: str
    error: str
    result: str
    created_by: str
    tenant: str
    created_at: datetime | None
    updated_at: datetime | None
    completed_at: datetime | None
    last_seq: int

    @classmethod
    def from_proto(cls, t: tasks_pb2.Task) -> Task:
        return cls(
            id=t.id,
            title=t.title,
            description=t.description,
            agent_id=t.agent_id or None,
            status=_status(t.status),
            progress=t.progress,
            step=t.step,
            tool=t.tool,
            message=t.message,
            error=t.error,
            result=t.result,
            created_by=t.created_by,
            tenant=t.tenant,
            created_at=ts(t.created_at),
            updated_at=ts(t.updated_at),
            completed_at=ts(t.completed_at) if t.HasField("completed_at") else None,
            last_seq=t.last_seq,
        )


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    type: str
    capabilities: list[str]
    status: str
    tenant: str
    created_at: datetime | None
    last_seen_at: datetime | None
    last_seq: int

    @classmethod
    def from_proto(cls, a: agents_pb2.Agent) -> Agent:
        return cls(
            id=a.id,
            name=a.name,
            type=a.type,
            capabilities=list(a.capabilities),
            status=_agent_status(a.status),
            tenant=a.tenant,
            created_at=ts(a.created_at),
            last_seen_at=ts(a.last_seen_at),
            last_seq=a.last_seq,
        )


@dataclass(frozen=True)
class Execution:
    id: str
    agent_id: str
    task_id: str | None
    input: Any
    status: str
    output: Any
    error: str
    cancel_requested: bool
    created_by: str
    tenant: str
    created_at: datetime | None
    updated_at: datetime | None
    last_seq: int

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    @classmethod
    def from_proto(cls, e: executions_pb2.Execution) -> Execution:
        return cls(
            id=e.id,
            agent_id=e.agent_id,
            task_id=e.task_id or None,
            input=from_json_text(e.input),
            status=_exec_status(e.status),
            output=from_json_text(e.output),
            error=e.error,
            cancel_requested=e.cancel_requested,
            created_by=e.created_by,
            tenant=e.tenant,
            created_at=ts(e.created_at),
            updated_at=ts(e.updated_at),
            last_seq=e.last_seq,
        )


@dataclass(frozen=True)
class Decision:
    """A person's (or the deadline's) answer to an approval request.

    ``arguments`` are the arguments finally approved: the original ones for
    ``approve``, the person's replacement for ``edit``, None for ``reject`` and
    ``respond``. ``message`` is the reject reason, the respond text or a comment.
    """

    kind: str
    arguments: Any
    message: str
    decided_by: str
    decided_at: datetime | None
    by_deadline: bool
    approval_id: str = ""
    tool_call_id: str = ""

    @classmethod
    def from_proto(cls, d: executions_pb2.Decision, approval_id: str = "", tool_call_id: str = "") -> Decision:
        return cls(
            kind=_kind(d.kind),
            arguments=from_json_text(d.arguments),
            message=d.message,
            decided_by=d.decided_by,
            decided_at=ts(d.decided_at),
            by_deadline=d.by_deadline,
            approval_id=approval_id,
            tool_call_id=tool_call_id,
        )


@dataclass(frozen=True)
class Approval:
    id: str
    execution_id: str
    tool_call_id: str
    action: str
    arguments: Any
    allowed_decisions: list[str]
    arguments_schema: Any
    deadline: datetime | None
    deadline_decision: str
    status: str
    requested_by: str
    requested_at: datetime | None
    decision: Decision | None
    tenant: str
    last_seq: int

    @classmethod
    def from_proto(cls, a: executions_pb2.Approval) -> Approval:
        return cls(
            id=a.id,
            execution_id=a.execution_id,
            tool_call_id=a.tool_call_id,
            action=a.action,
            arguments=from_json_text(a.arguments),
            allowed_decisions=[_kind(k) for k in a.allowed_decisions],
            arguments_schema=from_json_text(a.arguments_schema),
            deadline=ts(a.deadline) if a.HasField("deadline") else None,
            deadline_decision=_kind(a.deadline_decision),
            status=enum_name(a.status, executions_pb2.ApprovalStatus, "APPROVAL_STATUS_"),
            requested_by=a.requested_by,
            requested_at=ts(a.requested_at),
            decision=Decision.from_proto(a.decision, a.id, a.tool_call_id) if a.HasField("decision") else None,
            tenant=a.tenant,
            last_seq=a.last_seq,
        )


@dataclass(frozen=True)
class Event:
    """One event of Herald's log as delivered on ``channel``. ``data`` has the same
    snake_case fields as the WebSocket frames' ``data``."""

    seq: int
    type: str
    channel: str
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None
    actor: str = ""
    resource: str = ""

    @classmethod
    def from_proto(cls, e: events_pb2.Event) -> Event:
        return cls(
            seq=e.seq,
            type=e.type,
            channel=e.channel,
            data=event_data(e),
            timestamp=ts(e.timestamp),
            actor=e.actor,
            resource=e.resource,
        )


def event_data(e: events_pb2.Event) -> dict[str, Any]:
    which = e.WhichOneof("payload")
    if which == "execution_event":
        x = e.execution_event
        data = _json_object(x.data)
        return {"execution_id": x.execution_id, "status": _exec_status(x.status), **data}
    if which == "approval_event":
        a = e.approval_event
        return {"approval_id": a.approval_id, "execution_id": a.execution_id, **_json_object(a.data)}
    if which == "task_created":
        c = e.task_created
        return {
            "task_id": c.task_id,
            "title": c.title,
            "description": c.description,
            "agent_id": c.agent_id or None,
            "status": _status(c.status),
        }
    if which == "task_progress":
        p = e.task_progress
        return {
            "task_id": p.task_id,
            "status": _status(p.status),
            "progress": p.progress,
            "step": p.step,
            "tool": p.tool,
            "message": p.message,
            "error": p.error,
        }
    if which in ("task_completed", "task_failed", "task_cancelled"):
        f = getattr(e, which)
        detail = {"task_completed": "result", "task_failed": "error", "task_cancelled": "reason"}[which]
        return {
            "task_id": f.task_id,
            "status": _status(f.status),
            "progress": f.progress,
            detail: getattr(f, detail),
        }
    if which == "agent_update":
        u = e.agent_update
        return {
            "agent_id": u.agent_id,
            "status": _agent_status(u.status),
            "name": u.name,
            "type": u.type,
            "capabilities": list(u.capabilities),
        }
    return {}


def _json_object(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        v = json.loads(text)
    except ValueError:
        return {"data": text}
    return v if isinstance(v, dict) else {"data": v}
