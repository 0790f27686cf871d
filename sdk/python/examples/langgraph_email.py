"""A LangGraph agent run by Herald: a small deterministic graph (no LLM, no
network) that plans an email, asks a person with ``interrupt()``, and sends it
or not. Herald sees each node start and end, the tool call and its result, the
messages, and the approval; the decision resumes the graph.

    pip install "./sdk/python[langgraph]"
    export HERALD_TOKEN=$(cargo run -q -- token --sub executor --role agent)
    python sdk/python/examples/langgraph_email.py

then start an execution of agent "email-graph" with an input like
``{"to": "team@example.com", "topic": "the weekly report"}`` and decide its approval.
Environment: HERALD_URL (127.0.0.1:8080), HERALD_TOKEN, HERALD_AGENT_ID (email-graph).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt

from herald import Context, Executor
from herald.langgraph import run_graph


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    to: str
    topic: str
    sent: bool


def plan(state: State) -> dict[str, Any]:
    args = {"to": state["to"], "subject": f"About {state['topic']}"}
    call = {"name": "send_email", "args": args, "id": "call-1"}
    return {"messages": [AIMessage(content=f"I will email {state['to']}.", tool_calls=[call])]}


def approve(state: State) -> dict[str, Any]:
    call = state["messages"][-1].tool_calls[0]
    decision = interrupt(
        {
            "action": call["name"],
            "arguments": call["args"],
            "tool_call_id": call["id"],
            "allowed": ["approve", "reject", "edit"],
        }
    )
    if decision["kind"] in ("approve", "edit"):
        to = decision["arguments"]["to"]
        return {"messages": [ToolMessage(content=f"sent to {to}", tool_call_id=call["id"])], "sent": True}
    reason = decision["message"] or "rejected"
    return {"messages": [ToolMessage(content=reason, tool_call_id=call["id"], status="error")], "sent": False}


def reply(state: State) -> dict[str, Any]:
    text = "The email is on its way." if state["sent"] else "I did not send the email."
    return {"messages": [AIMessage(content=text)]}


def build_graph() -> Any:
    g = StateGraph(State)
    g.add_node("plan", plan)
    g.add_node("approve", approve)
    g.add_node("reply", reply)
    g.add_edge(START, "plan")
    g.add_edge("plan", "approve")
    g.add_edge("approve", "reply")
    g.add_edge("reply", END)
    return g.compile()


graph = build_graph()
executor = Executor(
    os.environ.get("HERALD_URL", "127.0.0.1:8080"),
    token=os.environ.get("HERALD_TOKEN"),
    agent_id=os.environ.get("HERALD_AGENT_ID", "email-graph"),
    name="Email graph",
    type="langgraph",
    capabilities=["send_email"],
)


@executor.run
async def run(ctx: Context) -> Any:
    inp = ctx.input if isinstance(ctx.input, dict) else {}
    state = await run_graph(
        ctx, graph, {"messages": [], "to": inp.get("to", "team@example.com"), "topic": inp.get("topic", "news"), "sent": False}
    )
    return {"sent": state["sent"], "reply": state["messages"][-1].content}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(executor.serve())
