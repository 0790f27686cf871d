"""``Client``: the async client for backends and scripts (tasks, agents,
executions, approvals, and a resuming event subscription)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, TypeVar

import grpc

from ._errors import HeraldError, is_retryable
from ._wire import Token, aio_channel, enum_value, json_text, metadata, progress_request, resolve, to_json_text
from .reporter import MAX_IN_FLIGHT, Reporter
from .types import Agent, Approval, Event, Execution, Task
from .v1 import (
    agents_pb2,
    agents_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    executions_pb2,
    executions_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)

log = logging.getLogger("herald")
T = TypeVar("T")

_AGENT_STATUS = {"online", "busy", "idle"}
LIVE_FROM_HEADER = "herald-live-from-seq"


def decision_kind(kind: str) -> Any:
    return enum_value(kind, executions_pb2.DecisionKind, "DECISION_KIND_")


class Client:
    """Async client of one Herald (``url`` like ``127.0.0.1:8080``, ``http://…`` or
    ``https://…``; defaults to ``$HERALD_URL``; ``token`` to ``$HERALD_TOKEN``, or a
    callable returning a fresh token). Use it as ``async with Client(...) as c:``.
    Every refused call raises :class:`HeraldError`."""

    def __init__(self, url: str | None = None, *, token: Token | None = None, timeout: float = 30.0) -> None:
        self.url, self._token = resolve(url, token)
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> Client:
        self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = aio_channel(self.url)
            ch = self._channel
            self._tasks = tasks_pb2_grpc.TaskServiceStub(ch)
            self._agents = agents_pb2_grpc.AgentServiceStub(ch)
            self._events = events_pb2_grpc.EventServiceStub(ch)
            self._executions = executions_pb2_grpc.ExecutionServiceStub(ch)
            self._approvals = executions_pb2_grpc.ApprovalServiceStub(ch)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _call(self, method: Any, request: Any) -> Any:
        self._open()
        try:
            return await method(request, metadata=metadata(self._token), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise HeraldError.from_rpc(e) from None

    # -- tasks ---------------------------------------------------------------

    async def create_task(self, title: str, description: str = "", agent_id: str = "") -> Task:
        self._open()
        req = tasks_pb2.CreateTaskRequest(title=title, description=description, agent_id=agent_id)
        return Task.from_proto(await self._call(self._tasks.CreateTask, req))

    async def get_task(self, task_id: str) -> Task:
        self._open()
        return Task.from_proto(await self._call(self._tasks.GetTask, tasks_pb2.GetTaskRequest(id=task_id)))

    async def list_tasks(self, status: str | None = None, limit: int = 100) -> list[Task]:
        self._open()
        req = tasks_pb2.ListTasksRequest(limit=limit)
        if status is not None:
            req.status = enum_value(status, events_pb2.TaskStatus, "TASK_STATUS_")
        return [Task.from_proto(t) for t in (await self._call(self._tasks.ListTasks, req)).tasks]

    async def start_task(self, task_id: str) -> Task:
        self._open()
        return Task.from_proto(await self._call(self._tasks.StartTask, tasks_pb2.StartTaskRequest(id=task_id)))

    async def report_progress(
        self,
        task_id: str,
        percent: int,
        *,
        step: str = "",
        tool: str = "",
        message: str = "",
        error: bool = False,
    ) -> Task:
        """Progress is a high-water mark; 100 completes the task."""
        self._open()
        req = progress_request(task_id, percent, step, tool, message, error)
        return Task.from_proto(await self._call(self._tasks.ReportProgress, req))

    def reporter(self, max_in_flight: int = MAX_IN_FLIGHT) -> Reporter:
        """A :class:`Reporter`: progress reports over one ``StreamReports`` stream,
        sent back to back and answered in order after their commit. For an executor
        that reports often, it costs Herald several times less than
        :meth:`report_progress` per report. Use it as ``async with c.reporter() as r:``."""
        self._open()
        return Reporter(self._tasks, self._token, max_in_flight)

    async def complete_task(self, task_id: str, result: Any = "") -> Task:
        self._open()
        req = tasks_pb2.CompleteTaskRequest(id=task_id, result=to_json_text(result))
        return Task.from_proto(await self._call(self._tasks.CompleteTask, req))

    async def fail_task(self, task_id: str, error: str) -> Task:
        self._open()
        req = tasks_pb2.FailTaskRequest(id=task_id, error=error)
        return Task.from_proto(await self._call(self._tasks.FailTask, req))

    async def cancel_task(self, task_id: str, reason: str = "") -> Task:
        self._open()
        req = tasks_pb2.CancelTaskRequest(id=task_id, reason=reason)
        return Task.from_proto(await self._call(self._tasks.CancelTask, req))

    # -- agents --------------------------------------------------------------

    async def register_agent(
        self, agent_id: str, name: str = "", type: str = "", capabilities: Iterable[str] = ()
    ) -> Agent:
        """Registers an agent, or updates it when it exists."""
        self._open()
        req = agents_pb2.RegisterAgentRequest(
            agent_id=agent_id, name=name or agent_id, type=type, capabilities=list(capabilities)
        )
        return Agent.from_proto(await self._call(self._agents.RegisterAgent, req))

    async def heartbeat(self, agent_id: str, status: str = "online") -> Agent:
        """``status`` is ``online``, ``busy`` or ``idle``."""
        self._open()
        if status not in _AGENT_STATUS:
            raise ValueError(f"status must be one of {sorted(_AGENT_STATUS)}")
        req = agents_pb2.HeartbeatRequest(
            agent_id=agent_id, status=enum_value(status, events_pb2.AgentStatus, "AGENT_STATUS_")
        )
        return Agent.from_proto(await self._call(self._agents.Heartbeat, req))

    async def get_agent(self, agent_id: str) -> Agent:
        self._open()
        return Agent.from_proto(await self._call(self._agents.GetAgent, agents_pb2.GetAgentRequest(agent_id=agent_id)))

    # -- executions and approvals -------------------------------------------

    async def execute(self, agent_id: str, input: Any, task_id: str = "") -> Execution:
        """Starts an execution of ``agent_id``. ``input`` is any JSON value; a ``str``
        is sent as it is (Herald takes a plain string as ``{"prompt": ...}``)."""
        self._open()
        req = executions_pb2.ExecuteRequest(agent_id=agent_id, input=to_json_text(input), task_id=task_id)
        return Execution.from_proto(await self._call(self._executions.Execute, req))

    async def get_execution(self, execution_id: str) -> Execution:
        self._open()
        req = executions_pb2.GetExecutionRequest(id=execution_id)
        return Execution.from_proto(await self._call(self._executions.GetExecution, req))

    async def cancel_execution(self, execution_id: str, reason: str = "") -> Execution:
        self._open()
        req = executions_pb2.CancelExecutionRequest(id=execution_id, reason=reason)
        return Execution.from_proto(await self._call(self._executions.CancelExecution, req))

    async def list_pending_approvals(self) -> list[Approval]:
        self._open()
        resp = await self._call(self._approvals.ListPendingApprovals, executions_pb2.ListPendingApprovalsRequest())
        return [Approval.from_proto(a) for a in resp.approvals]

    async def get_approval(self, approval_id: str) -> Approval:
        self._open()
        req = executions_pb2.GetApprovalRequest(id=approval_id)
        return Approval.from_proto(await self._call(self._approvals.GetApproval, req))

    async def decide(
        self, approval_id: str, kind: str, arguments: Any = None, message: str | None = None
    ) -> Approval:
        """Decides an approval: ``kind`` is ``approve``, ``reject``, ``edit`` (with the
        replacement ``arguments``) or ``respond`` (with ``message``). A second decision
        raises ``HeraldError("failed_precondition", ...)`` naming who decided."""
        self._open()
        req = executions_pb2.DecideRequest(
            approval_id=approval_id,
            kind=decision_kind(kind),
            arguments=json_text(arguments),
            message=message or "",
        )
        return Approval.from_proto(await self._call(self._approvals.Decide, req))

    # -- events --------------------------------------------------------------

    async def list_events(self, channel: str, after_seq: int = 0, limit: int = 100) -> list[Event]:
        self._open()
        req = events_pb2.ListEventsRequest(channel=channel, after_seq=after_seq, limit=limit)
        return [Event.from_proto(e) for e in (await self._call(self._events.ListEvents, req)).events]

    async def subscribe(
        self, channels: str | Iterable[str], after_seq: int | None = None, *, max_backoff: float = 5.0
    ) -> AsyncIterator[Event]:
        """Every event of ``channels`` after ``after_seq`` (only live events when None),
        in seq order, each once per channel. After a dropped stream, a slow-consumer
        close or a Herald restart it resubscribes from the last event it delivered, so
        nothing is lost or repeated. Refusals (bad channel, token) raise HeraldError.

        ``async for event in client.subscribe(["task_updates"], after_seq=0): ...``
        """
        self._open()
        names = [channels] if isinstance(channels, str) else list(channels)
        cursor = after_seq
        # Deliveries of the cursor's own seq, per channel: one event can be on several
        # of the subscribed channels, and a drop may come between those deliveries.
        at_cursor: set[str] = set()
        delay = 0.1
        while True:
            req = events_pb2.SubscribeRequest(channels=names)
            if cursor is not None:
                # Resume one before the cursor to get the cursor's other channels again.
                req.after_seq = max(cursor - 1, 0) if at_cursor else cursor
            call = self._events.Subscribe(req, metadata=metadata(self._token))
            try:
                if cursor is None:
                    # Herald says where live delivery starts: resuming from there
                    # loses nothing even when the stream drops before any event.
                    live_from = (await call.initial_metadata()).get(LIVE_FROM_HEADER)
                    if live_from is not None:
                        cursor = int(live_from)
                async for pe in call:
                    if cursor is not None and (pe.seq < cursor or (pe.seq == cursor and pe.channel in at_cursor)):
                        continue
                    if cursor is None or pe.seq > cursor:
                        cursor, at_cursor = pe.seq, set()
                    at_cursor.add(pe.channel)
                    delay = 0.1
                    yield Event.from_proto(pe)
                # Herald ended the stream (shutting down): resume.
            except grpc.aio.AioRpcError as e:
                if not is_retryable(e):
                    raise HeraldError.from_rpc(e) from None
                log.info("subscription dropped (%s); resuming after seq %s", e.code().name, cursor)
            finally:
                call.cancel()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, max_backoff)
