"""Reporter: progress streamed over StreamReports to a real Herald, answered in
order after commit; a refused report fails alone; a dead Herald fails what is
unanswered."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Herald

from herald import Client, HeraldError


async def test_reports_sent_back_to_back_are_stored_in_order(herald: Herald, admin_token: str) -> None:
    async with Client(herald.url, token=admin_token) as c:
        tasks = [await c.create_task(f"Index {i}") for i in range(2)]
        for t in tasks:
            await c.start_task(t.id)
        async with c.reporter() as r:
            sent = [
                (tasks[i % 2].id, await r.send_progress(tasks[i % 2].id, i // 4, step=f"step {i}"))
                for i in range(300)
            ]
            seqs = await asyncio.wait_for(asyncio.gather(*(answer for _, answer in sent)), 30)
            assert seqs == sorted(seqs) and len(set(seqs)) == 300, "one event each, in the order sent"
            last = await asyncio.wait_for(r.progress(tasks[0].id, 90, step="last"), 30)
            assert last > seqs[-1]
        for t, want_seq in ((tasks[0], last), (tasks[1], seqs[-1])):
            stored = await c.get_task(t.id)
            assert stored.last_seq == want_seq
        assert (await c.get_task(tasks[0].id)).progress == 90
        assert (await c.get_task(tasks[1].id)).progress == 299 // 4


async def test_a_refused_report_fails_alone(herald: Herald, admin_token: str) -> None:
    async with Client(herald.url, token=admin_token) as c:
        t = await c.create_task("Index")
        await c.start_task(t.id)
        async with c.reporter() as r:
            before = await r.send_progress(t.id, 10)
            missing = await r.send_progress("no-such-task", 20)
            after = await r.send_progress(t.id, 30)
            with pytest.raises(HeraldError) as e:
                await asyncio.wait_for(missing, 30)
            assert e.value.code == "not_found"
            assert await asyncio.wait_for(after, 30) > await asyncio.wait_for(before, 30)
        assert (await c.get_task(t.id)).progress == 30


async def test_reports_unanswered_when_herald_dies_fail_and_the_reporter_stays_failed(
    herald: Herald, admin_token: str
) -> None:
    async with Client(herald.url, token=admin_token) as c:
        t = await c.create_task("Index")
        await c.start_task(t.id)
        r = c.reporter()
        async with r:
            assert await asyncio.wait_for(r.progress(t.id, 10), 30) > 0
            herald.kill9()
            with pytest.raises(HeraldError) as e:
                for percent in range(11, 100):
                    await asyncio.wait_for(r.progress(t.id, percent), 30)
            assert e.value.code == "unavailable", e.value.message
            herald.start()
            with pytest.raises(HeraldError):
                await asyncio.wait_for(r.progress(t.id, 50), 30)
        async with c.reporter() as again:
            assert await asyncio.wait_for(again.progress(t.id, 60), 30) > 0


async def test_a_sender_waiting_for_room_learns_that_the_stream_ended(herald: Herald, admin_token: str) -> None:
    async with Client(herald.url, token=admin_token) as c:
        t = await c.create_task("Index")
        await c.start_task(t.id)
        async with c.reporter(max_in_flight=1) as r:
            await asyncio.wait_for(r.progress(t.id, 10), 30)
            herald.kill9()

            async def three() -> None:
                # The second waits for the first's answer to have room.
                for percent in (11, 12, 13):
                    await r.send_progress(t.id, percent)

            with pytest.raises(HeraldError):
                await asyncio.wait_for(three(), 30)


async def test_a_closed_reporter_refuses_reports(herald: Herald, admin_token: str) -> None:
    async with Client(herald.url, token=admin_token) as c:
        t = await c.create_task("Index")
        await c.start_task(t.id)
        r = c.reporter()
        async with r:
            await asyncio.wait_for(r.progress(t.id, 10), 30)
        with pytest.raises(HeraldError) as e:
            await asyncio.wait_for(r.progress(t.id, 20), 30)
        assert e.value.code == "failed_precondition"

        # A sender still waiting for room when the reporter closes is refused,
        # not left waiting for an answer that will never come.
        r = c.reporter(max_in_flight=1)
        async with r:
            first = await r.send_progress(t.id, 30)
            waiting = asyncio.ensure_future(r.send_progress(t.id, 40))
            await asyncio.sleep(0)
        assert await asyncio.wait_for(first, 30) > 0
        with pytest.raises(HeraldError) as e:
            await asyncio.wait_for(waiting, 30)
        assert e.value.code in ("failed_precondition", "unavailable")
        with pytest.raises(ValueError):
            c.reporter(max_in_flight=0)
