"""``Executor``: attaches to Herald as the executor of one agent and runs a
handler once per execution, with its ``Context`` for reporting and approvals.

What it takes care of so handlers do not have to:
- registering the agent, heartbeats, and re-attaching with backoff after any drop
  or Herald restart (gRPC UNAVAILABLE, stream end);
- commands are idempotent by id: an ``execute`` repeated after a re-attach does not
  start the handler twice; a ``decision`` repeated is delivered once;
- reports made while Herald is away are retried until it is back (only on
  UNAVAILABLE, where the request did not get through);
- ``request_approval`` waits for the decision from the command stream or from
  ``GetApproval`` (asked after every re-attach and now and then while waiting), and
  Herald returns the same approval for the same ``tool_call_id``, so a resumed
  execution never asks twice;
- ``cancel`` cancels the handler's task and acknowledges with ``ctx.partial_output``;
- reports carry the executor session ``Attach`` named (metadata ``x-herald-session``):
  Herald takes reports on an execution only from the session holding it. A report
  refused because the stream was replaced meanwhile is sent again in the new session.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import grpc

from ._errors import HeraldError
from ._wire import (
    Token,
    aio_channel,
    enum_value,
    from_json_text,
    json_text,
    metadata,
    resolve,
    timestamp,
    to_json_text,
)
from .client import decision_kind
from .types import Decision, Execution
from .v1 import agents_pb2, agents_pb2_grpc, events_pb2, executions_pb2, executions_pb2_grpc

log = logging.getLogger("herald.executor")

Handler = Callable[["Context"], Awaitable[Any]]

# Statuses on which a report is sent again: Herald (re)starting or unreachable.
_RESEND = frozenset({grpc.StatusCode.UNAVAILABLE})
# ... and, for a request sent with an idempotency key, when its answer was lost.
_RESEND_KEYED = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED})
# Metadata naming a request, so that Herald stores it once however often it is sent.
_IDEMPOTENCY_KEY = "idempotency-key"


def _new_key() -> str:
    return uuid.uuid4().hex
_FATAL_ATTACH = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
# Metadata naming the executor session: Attach answers with it, reports send it.
_SESSION = "x-herald-session"


class Context:
    """What a handler gets for one execution.

    ``execution_id``, ``task_id``, ``input`` (parsed JSON, or the text when it is not
    JSON), ``resumed`` (True when this execution ran before, here or in an executor
    that went away: the handler runs again from its start and the decisions already
    made are handed to ``request_approval`` at once). ``partial_output`` is sent with
    the acknowledgement when Herald cancels the execution.
    """

    def __init__(self, executor: Executor, cmd: executions_pb2.ExecuteCommand) -> None:
        self._executor = executor
        self.execution_id: str = cmd.execution_id
        self.task_id: str | None = cmd.task_id or None
        self.input: Any = from_json_text(cmd.input)
        self.resumed: bool = cmd.resumed
        self.partial_output: Any = None
        self.cancel_reason: str | None = None
        # tool_call_id -> decision, from decision commands and GetApproval.
        self._decisions: dict[str, Decision] = {}

    @property
    def agent_id(self) -> str:
        return self._executor.agent_id

    # -- reports ---------------------------------------------------------------

    async def _report(self, **event: Any) -> Execution:
        req = executions_pb2.ReportEventRequest(execution_id=self.execution_id, **event)
        ex = self._executor
        return Execution.from_proto(await ex._call(ex._exec.ReportEvent, req, idempotency_key=_new_key()))

    async def thinking(self, text: str) -> None:
        await self._report(thinking=executions_pb2.Thinking(text=text))

    async def tool_call(self, tool: str, arguments: Any = None, *, tool_call_id: str) -> None:
        call = executions_pb2.ToolCall(tool_call_id=tool_call_id, tool=tool, arguments=json_text(arguments))
        await self._report(tool_call=call)

    async def tool_result(self, tool_call_id: str, result: Any = None, *, is_error: bool = False) -> None:
        r = executions_pb2.ToolResult(tool_call_id=tool_call_id, result=json_text(result), is_error=is_error)
        await self._report(tool_result=r)

    async def message_delta(self, text: str) -> None:
        await self._report(message_delta=executions_pb2.MessageDelta(text=text))

    async def subagent_start(self, name: str, detail: str = "") -> None:
        await self._report(subagent_start=executions_pb2.Subagent(name=name, detail=detail))

    async def subagent_end(self, name: str, detail: str = "") -> None:
        await self._report(subagent_end=executions_pb2.Subagent(name=name, detail=detail))

    # -- approvals -------------------------------------------------------------

    async def request_approval(
        self,
        action: str,
        arguments: Any = None,
        *,
        tool_call_id: str,
        deadline: timedelta | datetime | None = None,
        on_deadline: str = "reject",
        allowed: Iterable[str] | None = None,
        schema: Any = None,
    ) -> Decision:
        """Asks a person for permission to run ``action`` with ``arguments`` and waits
        for the decision, however long it takes and across Herald restarts and
        re-attaches. ``allowed`` defaults to Herald's (approve and reject);
        ``on_deadline`` ("approve" or "reject") is taken when ``deadline`` passes;
        ``schema`` (a JSON schema) lets approvers edit the arguments.
        ``tool_call_id`` identifies the request: asking again with the same one (a
        resumed execution) returns the decision made, without a second request."""
        known = self._decisions.get(tool_call_id)
        if known is not None:
            return known
        ex = self._executor
        req = executions_pb2.RequestApprovalRequest(
            execution_id=self.execution_id,
            tool_call_id=tool_call_id,
            action=action,
            arguments=json_text(arguments),
            allowed_decisions=[decision_kind(k) for k in (allowed or ())],
            arguments_schema=json_text(schema),
        )
        if deadline is not None:
            req.deadline.CopyFrom(timestamp(deadline))
            req.deadline_decision = decision_kind(on_deadline)
        approval = await ex._call(ex._exec.RequestApproval, req)
        if approval.HasField("decision"):
            return self._remember(Decision.from_proto(approval.decision, approval.id, approval.tool_call_id))
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        ex._waiting[approval.id] = (self, fut)
        try:
            # A decision command may have come while RequestApproval was answering.
            if tool_call_id in self._decisions:
                return self._decisions[tool_call_id]
            while True:
                done, _ = await asyncio.wait({fut}, timeout=ex.poll_interval)
                if done:
                    return fut.result()
                # Belt and braces: the stream may have missed it (see Executor._poll).
                await ex._poll(approval.id)
        finally:
            ex._waiting.pop(approval.id, None)

    def _remember(self, d: Decision) -> Decision:
        self._decisions.setdefault(d.tool_call_id, d)
        return self._decisions[d.tool_call_id]


class _Run:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.task: asyncio.Task[Any] | None = None
        self.cancel_requested = False


class Executor:
    """The executor of agent ``agent_id`` on Herald at ``url`` (``127.0.0.1:8080``,
    ``http://…`` or ``https://…``). ``token`` needs the ``agent`` (or ``admin``)
    role. ``name``, ``type`` and ``capabilities`` are registered on every attach
    (registering is an update when the agent exists).

    Register the handler with ``@executor.run``, then ``await executor.serve()``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: Token | None = None,
        agent_id: str,
        name: str | None = None,
        type: str = "",
        capabilities: Iterable[str] = (),
        heartbeat_interval: float = 10.0,
        max_backoff: float = 5.0,
        poll_interval: float = 15.0,
    ) -> None:
        self.url, self._token = resolve(url, token)
        self.agent_id = agent_id
        self.name = name or agent_id
        self.type = type
        self.capabilities = list(capabilities)
        self.heartbeat_interval = heartbeat_interval
        self.max_backoff = max_backoff
        self.poll_interval = poll_interval
        self._handler: Handler | None = None
        self._runs: dict[str, _Run] = {}
        # Executions finished here (bounded): a late repeated execute is ignored.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._waiting: dict[str, tuple[Context, asyncio.Future[Decision]]] = {}
        self._attached = asyncio.Event()
        self._stopping: asyncio.Event | None = None
        self._channel: grpc.aio.Channel | None = None
        # The session of the current command stream (a new one per attach).
        self._session: str | None = None

    def run(self, handler: Handler) -> Handler:
        """Decorator: the coroutine function called once per execution with its
        ``Context``. Its return value completes the execution (``output``); an
        exception fails it with the exception's message."""
        self._handler = handler
        return handler

    @property
    def attached(self) -> bool:
        return self._attached.is_set()

    async def wait_attached(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._attached.wait(), timeout)

    @property
    def running(self) -> list[str]:
        """Ids of the executions whose handlers run here now."""
        return list(self._runs)

    def stop(self) -> None:
        """Ends ``serve()``: the command stream closes and running handlers are
        cancelled without acknowledging, so their executions wait ``detached`` for
        another executor (or this one, restarted) to resume them."""
        if self._stopping is not None:
            self._stopping.set()

    async def serve(self) -> None:
        """Attaches and handles commands until ``stop()``; re-attaches with backoff and
        jitter after any drop. Raises HeraldError when Herald refuses the token."""
        if self._handler is None:
            raise RuntimeError("no handler: decorate one with @executor.run")
        self._stopping = asyncio.Event()
        self._channel = aio_channel(self.url)
        self._agents = agents_pb2_grpc.AgentServiceStub(self._channel)
        self._exec = executions_pb2_grpc.ExecutorServiceStub(self._channel)
        self._approvals = executions_pb2_grpc.ApprovalServiceStub(self._channel)
        beat = asyncio.create_task(self._heartbeats())
        attach = asyncio.create_task(self._attach_loop())
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({attach, stop}, return_when=asyncio.FIRST_COMPLETED)
            if attach.done():
                attach.result()  # a fatal refusal
        finally:
            for t in (beat, attach, stop, *[r.task for r in self._runs.values() if r.task]):
                t.cancel()
            await asyncio.gather(beat, attach, stop, return_exceptions=True)
            await asyncio.gather(*[r.task for r in self._runs.values() if r.task], return_exceptions=True)
            self._runs.clear()
            self._attached.clear()
            await self._channel.close()

    # -- the command stream ----------------------------------------------------

    async def _attach_loop(self) -> None:
        delay = 0.1
        while True:
            call = None
            try:
                await self._register()
                call = self._exec.Attach(executions_pb2.AttachRequest(agent_id=self.agent_id), metadata=self._md())
                md = await call.initial_metadata()
                session = md.get(_SESSION) if md is not None else None
                self._session = session if isinstance(session, str) else None
                self._attached.set()
                log.info("attached as executor of %s", self.agent_id)
                delay = 0.1
                if self._waiting:
                    asyncio.create_task(self._poll_all())
                async for cmd in call:
                    self._dispatch(cmd)
                log.info("command stream ended; attaching again")
            except grpc.aio.AioRpcError as e:
                if e.code() in _FATAL_ATTACH:
                    raise HeraldError.from_rpc(e) from None
                log.info("attach failed or dropped (%s: %s); retrying", e.code().name, e.details())
            finally:
                self._attached.clear()
                if call is not None:
                    call.cancel()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_backoff)

    async def _register(self) -> None:
        req = agents_pb2.RegisterAgentRequest(
            agent_id=self.agent_id, name=self.name, type=self.type, capabilities=self.capabilities
        )
        await self._agents.RegisterAgent(req, metadata=self._md(), timeout=10)
        await self._beat()

    async def _beat(self) -> None:
        status = "busy" if self._runs else "online"
        req = agents_pb2.HeartbeatRequest(
            agent_id=self.agent_id, status=enum_value(status, events_pb2.AgentStatus, "AGENT_STATUS_")
        )
        await self._agents.Heartbeat(req, metadata=self._md(), timeout=10)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._beat()
            except grpc.aio.AioRpcError as e:
                log.debug("heartbeat failed: %s", e.details())

    def _dispatch(self, cmd: executions_pb2.ExecutorCommand) -> None:
        which = cmd.WhichOneof("command")
        if which == "execute":
            self._execute(cmd.execute)
        elif which == "cancel":
            self._cancel(cmd.cancel)
        elif which == "decision":
            d = cmd.decision
            self._deliver(d.execution_id, Decision.from_proto(d.decision, d.approval_id, d.tool_call_id))

    def _execute(self, cmd: executions_pb2.ExecuteCommand) -> None:
        eid = cmd.execution_id
        if eid in self._runs:
            log.debug("execution %s already runs here (repeated after a re-attach)", eid)
            return
        if eid in self._finished:
            log.debug("execution %s already finished here", eid)
            return
        run = _Run(Context(self, cmd))
        self._runs[eid] = run
        run.task = asyncio.create_task(self._drive(run), name=f"herald-execution-{eid}")

    def _cancel(self, cmd: executions_pb2.CancelCommand) -> None:
        run = self._runs.get(cmd.execution_id)
        if run is None:
            # Not running here (any more): acknowledge, or Herald waits for its timeout.
            asyncio.create_task(self._ack_cancel(cmd.execution_id, None))
            return
        if not run.cancel_requested:
            run.cancel_requested = True
            run.ctx.cancel_reason = cmd.reason
            if run.task is not None:
                run.task.cancel()

    def _deliver(self, execution_id: str, d: Decision) -> None:
        run = self._runs.get(execution_id)
        if run is not None:
            run.ctx._remember(d)
        waiter = self._waiting.pop(d.approval_id, None)
        if waiter is not None and not waiter[1].done():
            waiter[1].set_result(waiter[0]._remember(d))

    async def _poll(self, approval_id: str) -> None:
        try:
            a = await self._approvals.GetApproval(
                executions_pb2.GetApprovalRequest(id=approval_id), metadata=self._md(), timeout=10
            )
        except grpc.aio.AioRpcError as e:
            log.debug("GetApproval %s failed: %s", approval_id, e.details())
            return
        if a.HasField("decision"):
            self._deliver(a.execution_id, Decision.from_proto(a.decision, a.id, a.tool_call_id))

    async def _poll_all(self) -> None:
        await asyncio.gather(*[self._poll(a) for a in list(self._waiting)])

    # -- running one execution -------------------------------------------------

    async def _drive(self, run: _Run) -> None:
        ctx, eid = run.ctx, run.ctx.execution_id
        assert self._handler is not None
        try:
            try:
                output = await self._handler(ctx)
            except asyncio.CancelledError:
                if not run.cancel_requested:
                    raise  # the executor is stopping: leave the execution for a resume
                task = asyncio.current_task()
                if task is not None and hasattr(task, "uncancel"):
                    task.uncancel()  # Herald's cancel is handled here: acknowledge it
                await self._ack_cancel(eid, ctx.partial_output)
                return
            except Exception as e:  # noqa: BLE001 - the handler's failure is reported
                if run.cancel_requested:
                    await self._ack_cancel(eid, ctx.partial_output)
                    return
                log.info("execution %s failed: %r", eid, e)
                message = str(e) or type(e).__name__
                await self._final(eid, error=executions_pb2.ExecutionError(message=message))
                return
            if run.cancel_requested:
                await self._ack_cancel(eid, output if output is not None else ctx.partial_output)
            else:
                await self._final(eid, complete=executions_pb2.Complete(output=to_json_text(output)))
        finally:
            self._runs.pop(eid, None)
            self._finished[eid] = None
            while len(self._finished) > 10_000:
                self._finished.popitem(last=False)

    async def _ack_cancel(self, eid: str, partial: Any) -> None:
        await self._final(eid, cancelled=executions_pb2.Complete(output=to_json_text(partial)))

    async def _final(self, eid: str, **event: Any) -> None:
        req = executions_pb2.ReportEventRequest(execution_id=eid, **event)
        try:
            await self._call(self._exec.ReportEvent, req, idempotency_key=_new_key())
        except HeraldError as e:
            # E.g. already finished: cancelled by timeout, failed after the grace period.
            log.warning("final report of execution %s refused: %s", eid, e)

    # -- calls -----------------------------------------------------------------

    def _md(self) -> tuple[tuple[str, str], ...]:
        return metadata(self._token)

    async def _call(self, method: Any, request: Any, *, idempotency_key: str | None = None) -> Any:
        """One unary call in the current executor session, sent again while Herald
        is unreachable (UNAVAILABLE: the request did not get through), so handlers
        carry on across a restart, and once more in a new session when the one it
        was sent in ended meanwhile (PERMISSION_DENIED: that session no longer holds
        the execution; a re-attach hands it to the new one). With an
        ``idempotency_key`` (the same on every attempt) Herald stores the request once
        however often it arrives, so it is also sent again when its answer was lost
        (DEADLINE_EXCEEDED)."""
        delay = 0.1
        resend = _RESEND | _RESEND_KEYED if idempotency_key else _RESEND
        while True:
            session = self._session
            md = self._md() + (((_SESSION, session),) if session else ())
            if idempotency_key:
                md += ((_IDEMPOTENCY_KEY, idempotency_key),)
            try:
                return await method(request, metadata=md, timeout=30)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.PERMISSION_DENIED:
                    if not await self._session_replaced(session):
                        raise HeraldError.from_rpc(e) from None
                    log.info("refused in executor session %s, which ended; sending again", session)
                    continue
                if e.code() not in resend:
                    raise HeraldError.from_rpc(e) from None
                log.info("Herald unavailable (%s); sending again", e.details())
            try:
                await asyncio.wait_for(self._attached.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(delay * random.random())
            delay = min(delay * 2, self.max_backoff)

    async def _session_replaced(self, sent_in: str | None) -> bool:
        """True when a new session replaced ``sent_in`` (waiting up to a few seconds
        for a re-attach in progress): a refused report is worth sending again."""
        if self._session != sent_in and self.attached:
            return True
        try:
            await asyncio.wait_for(self._attached.wait(), timeout=5 * self.max_backoff)
        except asyncio.TimeoutError:
            return False
        return self._session != sent_in
