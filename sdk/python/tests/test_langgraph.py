"""The LangGraph example (examples/langgraph_email.py) run as a real executor
process with the real ``langgraph`` package against a real Herald."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import SDK, Herald, eventually, python_process

from herald import Client


@pytest.mark.parametrize("kind", ["approve", "edit", "reject"])
async def test_the_langgraph_example_streams_the_graph_and_resumes_it_with_the_decision(
    herald: Herald, agent_token: str, admin_token: str, tmp_path: Path, kind: str
) -> None:
    env = {"HERALD_URL": herald.url, "HERALD_TOKEN": agent_token, "HERALD_AGENT_ID": "email-graph"}
    log = tmp_path / "executor.log"
    proc = python_process(SDK / "examples" / "langgraph_email.py", env, log)
    try:
        async with Client(herald.url, token=admin_token) as c:
            e = await c.execute("email-graph", {"to": "team@example.com", "topic": "the weekly report"})

            async def asked() -> Any:
                return next((a for a in await c.list_pending_approvals() if a.execution_id == e.id), None)

            approval = await eventually(asked, 30)
            assert approval.action == "send_email" and approval.tool_call_id == "call-1"
            assert approval.arguments == {"to": "team@example.com", "subject": "About the weekly report"}
            assert approval.allowed_decisions == ["approve", "reject", "edit"]
            edited = {"to": "boss@example.com", "subject": "S"}
            await c.decide(approval.id, kind, arguments=edited if kind == "edit" else None, message="no" if kind == "reject" else None)

            async def finished() -> Any:
                x = await c.get_execution(e.id)
                return x if x.finished else None

            done = await eventually(finished, 30)
            assert done.status == "completed", (done, log.read_text())
            sent = kind != "reject"
            reply = "The email is on its way." if sent else "I did not send the email."
            assert done.output == {"sent": sent, "reply": reply}
            events = await c.list_events(f"execution:{e.id}", 0, 1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)

    by_type: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        by_type.setdefault(ev.type, []).append(ev.data)
    starts = [d["name"] for d in by_type["subagent_start"]]
    ends = [(d["name"], d.get("detail", "")) for d in by_type["subagent_end"]]
    # approve runs twice: interrupted, then resumed with the decision.
    assert starts == ["plan", "approve", "approve", "reply"]
    assert ends == [("plan", ""), ("approve", "interrupted"), ("approve", ""), ("reply", "")]
    assert [(d["tool"], d["tool_call_id"]) for d in by_type["tool_call"]] == [("send_email", "call-1")]
    [result] = by_type["tool_result"]
    assert result["tool_call_id"] == "call-1"
    if kind == "reject":
        assert result["is_error"] is True
    else:
        to = "boss@example.com" if kind == "edit" else "team@example.com"
        assert result["result"] == f"sent to {to}" and result["is_error"] is False
    assert [d["text"] for d in by_type["message_delta"]] == ["I will email team@example.com.", reply]
    counts = Counter(ev.type for ev in events)
    assert counts["approval_required"] == 1 and counts["complete"] == 1
