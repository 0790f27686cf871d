"""Fixtures seed 000's tests expect, pointed at a running Herald.

HERALD_HTTP_URL  base URL of the JSON HTTP API (default http://127.0.0.1:8080)
HERALD_TOKEN     a bearer token Herald accepts (mint one with `herald token`)
HERALD_WS_URL    read by test_seed000.py (default ws://127.0.0.1:8080)
"""

import os

import httpx
import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def api_client():
    base_url = os.environ.get("HERALD_HTTP_URL", "http://127.0.0.1:8080").rstrip("/")
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
        yield client


@pytest.fixture
def test_users():
    token = os.environ.get("HERALD_TOKEN")
    if not token:
        pytest.fail("set HERALD_TOKEN to a token Herald accepts (see tests/seed000/run.sh)")
    return {"user": {"token": token}}
