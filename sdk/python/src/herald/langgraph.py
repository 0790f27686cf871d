"""Runs a compiled LangGraph graph inside a Herald execution and reports what it
does: each node's start and end as ``subagent_start``/``subagent_end``, tool calls
(``AIMessage.tool_calls``) and ``ToolMessage`` results as ``tool_call``/
``tool_result``, AI message text (streamed chunks or whole messages) as
``message_delta``. A graph ``interrupt(value)`` becomes a Herald approval; the
decision resumes the graph with ``Command(resume={"kind", "arguments", "message",
"decided_by", "by_deadline"})``.

``interrupt()`` values understood (all optional): ``action`` (the tool name; the
node's name otherwise), ``arguments`` (the whole value otherwise),
``tool_call_id`` (``interrupt-<n>`` otherwise: the n-th interrupt of the
execution, so a deterministic graph asks the same after a resume), ``allowed``,
``schema``, ``deadline`` (seconds or a timedelta) and ``on_deadline``.

    from herald.langgraph import graph_handler
    executor.run(graph_handler(graph))

Needs ``pip install "herald-sdk[langgraph]"``. A graph compiled without a
checkpointer gets an in-memory one (interrupts need one); pass your own durable
checkpointer to keep the graph's state across an executor restart (without one,
a resumed execution runs the graph again from its start and Herald hands back
the decisions already made, by ``tool_call_id``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from langgraph.types import Command

from .executor import Context
from .types import Decision


def _text(msg: Any) -> str:
    content = getattr(msg, "content", "")
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def _is_ai(msg: Any) -> bool:
    return getattr(msg, "type", "") in ("ai", "AIMessageChunk")


def default_input(ctx: Context) -> Any:
    """``{"prompt": p}`` or a plain string becomes ``{"messages": [("user", p)]}``;
    any other JSON object is the graph's input as it is."""
    value = ctx.input
    if isinstance(value, str):
        return {"messages": [("user", value)]}
    if isinstance(value, dict) and set(value) == {"prompt"}:
        return {"messages": [("user", value["prompt"])]}
    return value


def default_output(state: Any) -> Any:
    """The text of the last message when the state has ``messages``; else the state."""
    if isinstance(state, dict) and state.get("messages"):
        return _text(state["messages"][-1])
    return state


def resume_value(d: Decision) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "arguments": d.arguments,
        "message": d.message,
        "decided_by": d.decided_by,
        "by_deadline": d.by_deadline,
    }


async def run_graph(ctx: Context, graph: Any, input: Any = None, config: dict[str, Any] | None = None) -> Any:
    """Runs ``graph`` on ``input`` (``default_input(ctx)`` when None) until it ends,
    turning interrupts into approvals, and returns the final state's values.
    The thread id is the execution id unless ``config`` sets one."""
    if getattr(graph, "checkpointer", None) is None:
        from langgraph.checkpoint.memory import InMemorySaver

        graph = graph.copy(update={"checkpointer": InMemorySaver()})
    config = dict(config or {})
    config["configurable"] = {"thread_id": ctx.execution_id, **config.get("configurable", {})}
    run = _Reporter(ctx)
    step: Any = default_input(ctx) if input is None else input
    while True:
        interrupts: list[Any] = []
        async for mode, chunk in graph.astream(step, config, stream_mode=["tasks", "messages", "updates"]):
            if mode == "tasks":
                await run.task(chunk)
            elif mode == "messages":
                await run.message(chunk[0])
            elif mode == "updates":
                if "__interrupt__" in chunk:
                    interrupts.extend(chunk["__interrupt__"])
                else:
                    await run.updates(chunk)
        if not interrupts:
            return (await graph.aget_state(config)).values
        answers = [await run.ask(i) for i in interrupts]
        if len(interrupts) == 1:
            step = Command(resume=answers[0])
        else:
            step = Command(resume={i.id: a for i, a in zip(interrupts, answers)})


def graph_handler(
    graph: Any,
    *,
    input: Callable[[Context], Any] = default_input,
    output: Callable[[Any], Any] = default_output,
    config: dict[str, Any] | None = None,
) -> Callable[[Context], Any]:
    """A handler for ``Executor.run`` that runs ``graph`` per execution and completes
    it with ``output(final_state)``."""

    async def handler(ctx: Context) -> Any:
        return output(await run_graph(ctx, graph, input(ctx), config))

    return handler


class _Reporter:
    """Turns the graph's stream into Herald reports, each thing once."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.node = ""
        self.interrupts = 0
        self.seen_messages: set[str] = set()
        self.seen_calls: set[str] = set()
        self.seen_results: set[str] = set()
        self.said = ""

    async def task(self, t: dict[str, Any]) -> None:
        name = str(t.get("name", ""))
        if "input" in t:
            self.node = name
            await self.ctx.subagent_start(name)
        else:
            detail = "interrupted" if t.get("interrupts") else (str(t["error"]) if t.get("error") else "")
            await self.ctx.subagent_end(name, detail)

    async def message(self, msg: Any) -> None:
        if not _is_ai(msg):
            return
        mid = getattr(msg, "id", None)
        whole = getattr(msg, "type", "") == "ai"
        if whole and mid:
            if mid in self.seen_messages:
                return
            self.seen_messages.add(mid)
        text = _text(msg)
        if text:
            self.said += text
            self.ctx.partial_output = self.said
            await self.ctx.message_delta(text)

    async def updates(self, chunk: dict[str, Any]) -> None:
        for update in chunk.values():
            messages = update.get("messages", []) if isinstance(update, dict) else []
            if not isinstance(messages, list):
                messages = [messages]
            for m in messages:
                for call in getattr(m, "tool_calls", None) or ():
                    cid = call.get("id") or ""
                    if cid and cid not in self.seen_calls:
                        self.seen_calls.add(cid)
                        await self.ctx.tool_call(call.get("name", ""), call.get("args", {}), tool_call_id=cid)
                if getattr(m, "type", "") == "tool":
                    cid = getattr(m, "tool_call_id", "")
                    if cid and cid not in self.seen_results:
                        self.seen_results.add(cid)
                        is_error = getattr(m, "status", "success") == "error"
                        await self.ctx.tool_result(cid, _text(m), is_error=is_error)

    async def ask(self, interrupt: Any) -> dict[str, Any]:
        self.interrupts += 1
        value = interrupt.value
        spec = value if isinstance(value, dict) else {}
        deadline = spec.get("deadline")
        if isinstance(deadline, (int, float)):
            deadline = timedelta(seconds=deadline)
        d = await self.ctx.request_approval(
            str(spec.get("action") or self.node or "interrupt"),
            spec.get("arguments", value),
            tool_call_id=str(spec.get("tool_call_id") or f"interrupt-{self.interrupts}"),
            deadline=deadline,
            on_deadline=str(spec.get("on_deadline", "reject")),
            allowed=spec.get("allowed"),
            schema=spec.get("schema"),
        )
        return resume_value(d)
