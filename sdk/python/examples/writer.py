"""The executor from the SDK's README: an agent that asks a person before it
sends an email. Run Herald (`cargo run` at the repository root), then:

    export HERALD_TOKEN=$(cargo run -q -- token --sub executor --role agent)
    python sdk/python/examples/writer.py

and start an execution of agent "writer" (the dashboard, `POST /api/v1/executions`,
or `Client.execute("writer", "email the team")`), then decide its approval.
Environment: HERALD_URL (127.0.0.1:8080), HERALD_TOKEN, HERALD_AGENT_ID (writer).
"""

import asyncio
import logging
import os
from datetime import timedelta

from herald import Executor

executor = Executor(
    os.environ.get("HERALD_URL", "127.0.0.1:8080"),
    token=os.environ["HERALD_TOKEN"],
    agent_id=os.environ.get("HERALD_AGENT_ID", "writer"),
    name="Writer",
    capabilities=["send_email"],
)


@executor.run
async def run(ctx):
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
    return {"decision": d.kind, "resumed": ctx.resumed}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(executor.serve())
