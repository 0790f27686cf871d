"""The executor loop against a real Herald: each decision kind, failures,
cancel with partial output, a Herald kill -9 while a handler waits for a
decision, and an executor process killed and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import SDK, Herald, eventually, python_process

from herald import Client, Context, Executor, HeraldError


def writer(herald: Herald, token: str, agent_id: str = "writer") -> tuple[Executor, list[Context]]:
    """The issue's example handler; records every call."""
    ex = Executor(herald.url, token=token, agent_id=agent_id, name="Writer", capabilities=["send_email"])
    calls: list[Context] = []

    @ex.run
    async def run(ctx: Context) -> Any:
        calls.append(ctx)
        await ctx.thinking("planning the email")
        await ctx.tool_call("send_email", {"to": "team@example.com"}, tool_call_id="c1")
        d = await ctx.request_approval(
            "send_email",
            {"to": "team@example.com"},
            tool_call_id="c1",
            deadline=timedelta(minutes=5),
            on_deadline="reject",
            allowed=["approve", "reject", "edit", "respond"],
        )
        if d.kind in ("approve", "edit"):
            await ctx.tool_result("c1", {"sent_to": d.arguments["to"]})
        await ctx.message_delta("done")
        return {"decision": d.kind, "message": d.message, "decided_by": d.decided_by}

    return ex, calls


async def pending_for(c: Client, execution_id: str) -> Any:
    async def find() -> Any:
        return next((a for a in await c.list_pending_approvals() if a.execution_id == execution_id), None)

    return await eventually(find)


async def finished(c: Client, execution_id: str, timeout: float = 20) -> Any:
    async def check() -> Any:
        e = await c.get_execution(execution_id)
        return e if e.finished else None

    return await eventually(check, timeout)


async def event_types(c: Client, execution_id: str) -> list[str]:
    return [e.type for e in await c.list_events(f"execution:{execution_id}", 0, 1000)]


@pytest.mark.parametrize(
    "kind,arguments,message,sent_to",
    [
        ("approve", None, "ok", "team@example.com"),
        ("reject", None, "not now", None),
        ("edit", {"to": "boss@example.com"}, "", "boss@example.com"),
        ("respond", None, "use the wiki instead", None),
    ],
)
async def test_the_loop_with_each_decision_kind(
    herald: Herald, agent_token: str, admin_token: str, run_executor: Any, kind: str, arguments: Any, message: str, sent_to: Any
) -> None:
    ex, calls = writer(herald, agent_token)
    await run_executor(ex)
    async with Client(herald.url, token=admin_token) as c:
        e = await c.execute("writer", "email the team")
        approval = await pending_for(c, e.id)
        assert approval.action == "send_email" and approval.tool_call_id == "c1"
        assert approval.arguments == {"to": "team@example.com"}
        assert approval.deadline is not None and approval.deadline_decision == "reject"
        await c.decide(approval.id, kind, arguments=arguments, message=message)
        done = await finished(c, e.id)
        assert done.status == "completed", done
        assert done.output == {"decision": kind, "message": message, "decided_by": "alice"}
        types = await event_types(c, e.id)
        results = [x for x in await c.list_events(f"execution:{e.id}", 0, 1000) if x.type == "tool_result"]
    decided = {"approve": "approved", "reject": "rejected", "edit": "edited", "respond": "responded"}[kind]
    expected = ["thinking", "tool_call", "approval_required", decided]
    expected += ["tool_result"] if sent_to else []
    expected += ["message_delta", "complete"]
    assert [t for t in types if t in set(expected)] == expected
    if sent_to:
        assert results[0].data["result"] == {"sent_to": sent_to}
    assert len(calls) == 1 and not calls[0].resumed


async def test_an_exception_fails_the_execution_with_its_message(
    herald: Herald, agent_token: str, admin_token: str, run_executor: Any
) -> None:
    ex = Executor(herald.url, token=agent_token, agent_id="broken")

    @ex.run
    async def run(ctx: Context) -> Any:
        assert ctx.input == {"n": 1}
        raise ValueError("the model is down")

    await run_executor(ex)
    async with Client(herald.url, token=admin_token) as c:
        e = await c.execute("broken", {"n": 1})
        done = await finished(c, e.id)
    assert done.status == "failed" and done.error == "the model is down"


async def test_cancel_cancels_the_handler_and_acknowledges_with_the_partial_output(
    herald: Herald, agent_token: str, admin_token: str, run_executor: Any
) -> None:
    ex = Executor(herald.url, token=agent_token, agent_id="slow")
    cancelled = asyncio.Event()

    @ex.run
    async def run(ctx: Context) -> Any:
        ctx.partial_output = {"words": 0}
        try:
            for i in range(1, 1000):
                await ctx.message_delta(f"word{i} ")
                ctx.partial_output = {"words": i}
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "finished"

    await run_executor(ex)
    async with Client(herald.url, token=admin_token) as c:
        e = await c.execute("slow", "write a long text")

        async def some_words() -> bool:
            return (await event_types(c, e.id)).count("message_delta") >= 3

        await eventually(some_words)
        await c.cancel_execution(e.id, "changed my mind")
        done = await finished(c, e.id)
        await asyncio.wait_for(cancelled.wait(), 5)
        assert done.status == "cancelled"
        assert isinstance(done.output, dict) and done.output["words"] >= 3
        deltas = (await event_types(c, e.id)).count("message_delta")
        # The output is what the handler had said when it was stopped.
        assert done.output["words"] in (deltas, deltas - 1)
        assert ex.running == []


async def test_herald_kill9_and_restart_while_the_handler_waits(
    herald: Herald, agent_token: str, admin_token: str, run_executor: Any
) -> None:
    ex, calls = writer(herald, agent_token)
    await run_executor(ex)
    async with Client(herald.url, token=admin_token) as c:
        e = await c.execute("writer", "email the team")
        approval = await pending_for(c, e.id)
    herald.kill9()
    await eventually(lambda: _false_async(ex.attached), 10)
    herald.start()
    await asyncio.wait_for(ex.wait_attached(), 20)
    async with Client(herald.url, token=admin_token) as c:
        # The decision is made after the restart and reaches the waiting handler.
        await c.decide(approval.id, "approve", message="after the restart")
        done = await finished(c, e.id)
        assert done.status == "completed"
        assert done.output["decision"] == "approve" and done.output["message"] == "after the restart"
        events = await c.list_events(f"execution:{e.id}", 0, 1000)
    seqs = [x.seq for x in events]
    assert len(seqs) == len(set(seqs))
    counts = Counter(x.type for x in events)
    for once in ("thinking", "tool_call", "approval_required", "approved", "tool_result", "message_delta", "complete"):
        assert counts[once] == 1, (once, counts)
    # The handler ran once: the repeated execute after the re-attach did not start it again.
    assert len(calls) == 1


async def _false_async(v: bool) -> bool:
    return not v


async def test_an_executor_process_killed_and_restarted_resumes_the_execution(
    herald: Herald, agent_token: str, admin_token: str, tmp_path: Path
) -> None:
    script = SDK / "examples" / "writer.py"
    env = {"HERALD_URL": herald.url, "HERALD_TOKEN": agent_token, "HERALD_AGENT_ID": "writer"}
    first = python_process(script, env, tmp_path / "executor-1.log")
    second = None
    try:
        async with Client(herald.url, token=admin_token) as c:
            e = await c.execute("writer", "email the team")
            approval = await pending_for(c, e.id)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)

            async def detached() -> bool:
                return (await c.get_execution(e.id)).status == "detached"

            await eventually(detached)
            second = python_process(script, env, tmp_path / "executor-2.log")

            async def resumed() -> bool:
                return (await c.get_execution(e.id)).status in ("running", "awaiting_approval") and (
                    "executor_reattached" in await event_types(c, e.id)
                )

            await eventually(resumed, 20)
            await c.decide(approval.id, "edit", arguments={"to": "boss@example.com"})
            done = await finished(c, e.id)
            assert done.status == "completed", (done, (tmp_path / "executor-2.log").read_text())
            assert done.output == {"decision": "edit", "resumed": True}
            counts = Counter(await event_types(c, e.id))
            # The resumed handler asked again with the same tool_call_id: one approval.
            assert counts["approval_required"] == 1 and counts["edited"] == 1, counts
            assert len(await c.list_pending_approvals()) == 0
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except Exception:
                    p.kill()


async def test_a_report_resent_under_its_idempotency_key_is_stored_once(
    herald: Herald, agent_token: str, admin_token: str, run_executor: Any
) -> None:
    from herald.v1 import executions_pb2

    ex = Executor(herald.url, token=agent_token, agent_id="twice")
    answers: list[int] = []

    @ex.run
    async def run(ctx: Context) -> Any:
        req = executions_pb2.ReportEventRequest(
            execution_id=ctx.execution_id, thinking=executions_pb2.Thinking(text="once")
        )
        # What the executor does when a report's answer is lost: the same request, the same key.
        for _ in range(2):
            answers.append((await ex._call(ex._exec.ReportEvent, req, idempotency_key="report-1")).last_seq)
        await ctx.thinking("once more, as a new report")
        return "ok"

    await run_executor(ex)
    async with Client(herald.url, token=admin_token) as c:
        e = await c.execute("twice", "go")
        await finished(c, e.id)
        counts = Counter(await event_types(c, e.id))
    assert answers[0] == answers[1], answers
    assert counts["thinking"] == 2, counts


async def test_refusals_are_herald_errors_with_herald_codes(herald: Herald, agent_token: str, admin_token: str) -> None:
    async with Client(herald.url, token=admin_token) as c:
        with pytest.raises(HeraldError) as bad:
            await c.create_task("")
        assert bad.value.code == "invalid_argument" and "title" in bad.value.message
        with pytest.raises(HeraldError) as missing:
            await c.get_task("no-such-task")
        assert missing.value.code == "not_found"
    async with Client(herald.url, token=agent_token) as c:
        with pytest.raises(HeraldError) as denied:
            await c.decide("whatever", "approve")
        assert denied.value.code == "permission_denied"
    async with Client(herald.url, token="not-a-jwt") as c:
        with pytest.raises(HeraldError) as unauth:
            await c.list_tasks()
        assert unauth.value.code == "unauthenticated"


async def test_a_decision_made_while_the_executor_is_down_reaches_the_resumed_handler_at_once(
    herald: Herald, agent_token: str, admin_token: str, tmp_path: Path
) -> None:
    script = SDK / "examples" / "writer.py"
    env = {"HERALD_URL": herald.url, "HERALD_TOKEN": agent_token, "HERALD_AGENT_ID": "writer"}
    first = python_process(script, env, tmp_path / "executor-1.log")
    second = None
    try:
        async with Client(herald.url, token=admin_token) as c:
            e = await c.execute("writer", "email the team")
            approval = await pending_for(c, e.id)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)

            async def detached() -> bool:
                return (await c.get_execution(e.id)).status == "detached"

            await eventually(detached)
            await c.decide(approval.id, "respond", message="ask the team lead first")
            second = python_process(script, env, tmp_path / "executor-2.log")
            done = await finished(c, e.id)
            assert done.status == "completed", (done, (tmp_path / "executor-2.log").read_text())
            assert done.output == {"decision": "respond", "resumed": True}
            counts = Counter(await event_types(c, e.id))
            assert counts["approval_required"] == 1 and counts["responded"] == 1, counts
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except Exception:
                    p.kill()
