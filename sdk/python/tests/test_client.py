"""Client: subscribe across a Herald restart, the synchronous task helper, and
the committed stubs matching proto/."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from conftest import SDK, Herald

import herald
from herald import Client, Event, HeraldError


async def test_subscribe_resumes_across_a_herald_restart_without_loss_or_duplicates(
    herald: Herald, admin_token: str
) -> None:
    got: list[Event] = []
    async with Client(herald.url, token=admin_token) as c:
        first = await c.create_task("before the subscription")

        async def consume() -> None:
            async for ev in c.subscribe(["task_updates"], after_seq=0):
                got.append(ev)

        consumer = asyncio.create_task(consume())
        try:
            titles = [f"task {i}" for i in range(5)]
            ids = [first.id]
            for t in titles[:2]:
                ids.append((await c.create_task(t)).id)
            await _until(lambda: len(got) >= 3)
            herald.kill9()
            herald.start()
            for t in titles[2:]:
                ids.append((await _retry(lambda t=t: c.create_task(t))).id)
            await c.report_progress(ids[-1], 40, step="fetch", tool="http", message="half")
            await _until(lambda: len(got) >= 7)
            await asyncio.sleep(0.3)  # anything repeated would come now
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
    seqs = [e.seq for e in got]
    assert seqs == sorted(set(seqs)), seqs
    assert [e.data["task_id"] for e in got if e.type == "task_created"] == ids
    progress = got[-1]
    assert progress.type == "task_progress" and progress.channel == "task_updates"
    assert progress.data == {
        "task_id": ids[-1],
        "status": "in_progress",
        "progress": 40,
        "step": "fetch",
        "tool": "http",
        "message": "half",
        "error": False,
    }
    assert got[0].data["title"] == "before the subscription" and got[0].actor == "alice"


async def test_a_live_subscribe_dropped_before_its_first_event_misses_nothing(
    herald: Herald, admin_token: str
) -> None:
    async with Client(herald.url, token=admin_token) as c:
        await c.create_task("before: not wanted")
        feed = c.subscribe("task_updates")  # no after_seq: live events only
        first = asyncio.create_task(feed.__anext__())
        await asyncio.sleep(0.5)  # subscribed, nothing delivered yet
        herald.kill9()
        herald.start()
        # Created at once after the restart, most likely before the feed is back.
        t = await _retry(lambda: c.create_task("while the feed was away"))
        ev = await asyncio.wait_for(first, 15)
        assert ev.type == "task_created" and ev.data["task_id"] == t.id
        await feed.aclose()


async def test_subscribe_refuses_an_unknown_channel(herald: Herald, admin_token: str) -> None:
    async with Client(herald.url, token=admin_token) as c:
        with pytest.raises(HeraldError) as e:
            async for _ in c.subscribe("no-such-channel"):
                pass
        assert e.value.code == "invalid_argument"


async def test_client_drives_tasks_and_agents(herald: Herald, admin_token: str) -> None:
    async with Client(herald.url, token=admin_token) as c:
        agent = await c.register_agent("indexer", name="Indexer", capabilities=["http"])
        assert agent.status == "created" and agent.capabilities == ["http"]
        assert (await c.heartbeat("indexer", "busy")).status == "busy"
        t = await c.create_task("Index", description="all of it", agent_id="indexer")
        assert t.status == "pending" and t.agent_id == "indexer"
        assert (await c.start_task(t.id)).status == "in_progress"
        assert (await c.report_progress(t.id, 30, step="fetch")).progress == 30
        done = await c.complete_task(t.id, {"pages": 3})
        assert done.status == "completed" and done.result == '{"pages":3}'
        other = await c.create_task("Other")
        await c.start_task(other.id)
        failed = await c.fail_task(other.id, "no network")
        assert failed.status == "failed" and failed.error == "no network"
        assert (await c.get_task(t.id)).completed_at is not None
        with pytest.raises(HeraldError) as e:
            await c.start_task(t.id)
        assert e.value.code == "failed_precondition"


def test_the_sync_helper_completes_on_exit_and_fails_with_the_exception(herald: Herald, admin_token: str) -> None:
    with herald_task("Index the docs", herald, admin_token) as t:
        t.progress(40, step="fetch", message="fetching pages")
        t.result = "42 pages"
        assert t.task is not None and t.task.status == "in_progress" and t.task.progress == 40
    done = asyncio.run(_get(herald, admin_token, t.id))
    assert done.status == "completed" and done.progress == 100 and done.result == "42 pages"

    with pytest.raises(RuntimeError, match="disk full"):
        with herald_task("Index more", herald, admin_token) as t2:
            t2.progress(10, step="fetch")
            raise RuntimeError("disk full")
    failed = asyncio.run(_get(herald, admin_token, t2.id))
    assert failed.status == "failed" and failed.error == "disk full" and failed.progress == 10

    with herald_task("Quick", herald, admin_token) as t3:
        t3.progress(100)  # completes it; the exit has nothing left to do
    assert asyncio.run(_get(herald, admin_token, t3.id)).status == "completed"


def herald_task(title: str, h: Herald, token: str) -> Any:
    return herald.task(title, url=f"http://{h.url}", token=token)


def test_the_committed_stubs_match_proto() -> None:
    r = subprocess.run(
        [sys.executable, str(SDK / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr


async def _get(h: Herald, token: str, task_id: str) -> Any:
    async with Client(h.url, token=token) as c:
        return await c.get_task(task_id)


async def _until(cond: Any, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def _retry(make: Any, timeout: float = 15) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await make()
            except HeraldError as e:
                if e.code != "unavailable":
                    raise
                await asyncio.sleep(0.05)
