"""Seed 000's WebSocket task-progress tests, run against a live Herald.

The five test functions below are copied verbatim from
/work/shared/seeds/000_bd117f5ab5370f7f.txt (test_01 ... test_05). Only the
imports and the `config` object (base URL from the environment) are added;
the `api_client` and `test_users` fixtures live in conftest.py.
"""

import pytest
import asyncio
import websockets
import websockets.exceptions  # the tests use websockets.exceptions.InvalidStatusCode
import json
import os
from types import SimpleNamespace
from httpx import AsyncClient

config = SimpleNamespace(
    WS_BASE_URL=os.environ.get("HERALD_WS_URL", "ws://127.0.0.1:8080").rstrip("/"),
)



@pytest.mark.asyncio
async def test_01_websocket_authentication(api_client: AsyncClient, test_users):
    """Test WebSocket connection requires authentication"""
    
    # Test 1: Connection without token should fail
    try:
        async with websockets.connect(f"{config.WS_BASE_URL}/ws") as ws:
            await ws.recv()
            assert False, "Should not connect without token"
    except websockets.exceptions.InvalidStatusCode as e:
        assert e.status_code == 403  # Forbidden
    
    # Test 2: Connection with invalid token should fail
    try:
        ws_url = f"{config.WS_BASE_URL}/ws?token=invalid_token_here"
        async with websockets.connect(ws_url) as ws:
            await ws.recv()
            assert False, "Should not connect with invalid token"
    except websockets.exceptions.InvalidStatusCode as e:
        assert e.status_code == 403
    
    # Test 3: Connection with valid token should succeed
    token = test_users['user']['token']
    ws_url = f"{config.WS_BASE_URL}/ws?token={token}"
    
    async with websockets.connect(ws_url) as websocket:
        welcome_msg = await websocket.recv()
        welcome_data = json.loads(welcome_msg)
        
        assert welcome_data['type'] == 'connection'
        assert welcome_data['status'] == 'connected'
        assert 'connection_id' in welcome_data


@pytest.mark.asyncio
async def test_02_websocket_agent_status_updates(
    api_client: AsyncClient,
    test_users
):
    """Test streaming agent status updates via WebSocket"""
    
    token = test_users['user']['token']
    headers = {"Authorization": f"Bearer {token}"}
    ws_url = f"{config.WS_BASE_URL}/ws?token={token}"
    
    async with websockets.connect(ws_url) as websocket:
        # Receive welcome message
        welcome = await websocket.recv()
        assert json.loads(welcome)['type'] == 'connection'
        
        # Subscribe to agent updates
        await websocket.send(json.dumps({
            'type': 'subscribe',
            'channel': 'agent_status'
        }))
        
        # Should receive subscription confirmation
        sub_confirm = await asyncio.wait_for(websocket.recv(), timeout=5.0)
        sub_data = json.loads(sub_confirm)
        assert sub_data['type'] == 'subscribed'
        assert sub_data['channel'] == 'agent_status'
        
        # Create a new agent via API
        agent_response = await api_client.post(
            "/api/v1/agents",
            headers=headers,
            json={
                "agent_id": "ws_test_agent_001",
                "name": "WebSocket Test Agent",
                "type": "test"
            }
        )
        assert agent_response.status_code == 200
        
        # Should receive agent creation event via WebSocket
        status_update = await asyncio.wait_for(websocket.recv(), timeout=5.0)
        status_data = json.loads(status_update)
        
        assert status_data['type'] == 'agent_update'
        assert status_data['data']['agent_id'] == 'ws_test_agent_001'
        assert status_data['data']['status'] == 'created'


@pytest.mark.asyncio
async def test_03_websocket_task_progress_streaming(
    api_client: AsyncClient,
    test_users
):
    """Test streaming task progress updates via WebSocket"""
    
    token = test_users['user']['token']
    headers = {"Authorization": f"Bearer {token}"}
    ws_url = f"{config.WS_BASE_URL}/ws?token={token}"
    
    async with websockets.connect(ws_url) as websocket:
        # Setup: Receive welcome and subscribe
        await websocket.recv()  # Welcome message
        
        await websocket.send(json.dumps({
            'type': 'subscribe',
            'channel': 'task_updates'
        }))
        
        # Wait for subscription confirmation
        sub_msg = await asyncio.wait_for(websocket.recv(), timeout=5.0)
        assert json.loads(sub_msg)['type'] == 'subscribed'
        
        # Create a task via API
        task_response = await api_client.post(
            "/api/v1/tasks",
            headers=headers,
            json={
                "title": "WebSocket Progress Test Task",
                "description": "Task for testing real-time progress updates",
                "agent_id": "test_agent"
            }
        )
        assert task_response.status_code == 200
        task_id = task_response.json()['id']
        
        # Should receive task creation event
        create_event = await asyncio.wait_for(websocket.recv(), timeout=5.0)
        create_data = json.loads(create_event)
        assert create_data['type'] == 'task_created'
        assert create_data['data']['task_id'] == task_id
        assert create_data['data']['status'] == 'pending'
        
        # Start the task
        start_response = await api_client.post(
            f"/api/v1/tasks/{task_id}/start",
            headers=headers
        )
        assert start_response.status_code == 200
        
        # Should receive task start event
        start_event = await asyncio.wait_for(websocket.recv(), timeout=5.0)
        start_data = json.loads(start_event)
        assert start_data['type'] == 'task_progress'
        assert start_data['data']['task_id'] == task_id
        assert start_data['data']['status'] == 'in_progress'
        assert start_data['data']['progress'] == 0
        
        # Simulate progress updates (would normally come from agent)
        progress_values = [25, 50, 75, 100]
        
        for expected_progress in progress_values:
            # Update progress via API
            await api_client.put(
                f"/api/v1/tasks/{task_id}/progress",
                headers=headers,
                json={"progress": expected_progress}
            )
            
            # Receive progress update via WebSocket
            progress_event = await asyncio.wait_for(websocket.recv(), timeout=5.0)
            progress_data = json.loads(progress_event)
            
            assert progress_data['type'] == 'task_progress'
            assert progress_data['data']['task_id'] == task_id
            assert progress_data['data']['progress'] == expected_progress
            
            if expected_progress == 100:
                assert progress_data['data']['status'] == 'completed'
            else:
                assert progress_data['data']['status'] == 'in_progress'


@pytest.mark.asyncio
async def test_04_concurrent_websocket_connections(
    api_client: AsyncClient,
    test_users
):
    """Test multiple concurrent WebSocket connections receive broadcasts"""
    
    token = test_users['user']['token']
    ws_url = f"{config.WS_BASE_URL}/ws?token={token}"
    
    # Create 5 concurrent WebSocket connections
    connections = []
    try:
        for i in range(5):
            ws = await websockets.connect(ws_url)
            connections.append(ws)
            await ws.recv()  # Welcome message
            
            # Subscribe each to task_updates
            await ws.send(json.dumps({
                'type': 'subscribe',
                'channel': 'task_updates'
            }))
            await ws.recv()  # Subscription confirmation
        
        # Trigger a broadcast event
        headers = {"Authorization": f"Bearer {token}"}
        task_response = await api_client.post(
            "/api/v1/tasks",
            headers=headers,
            json={
                "title": "Broadcast Test Task",
                "description": "Testing concurrent broadcast"
            }
        )
        assert task_response.status_code == 200
        
        # All 5 connections should receive the event
        received_messages = []
        for ws in connections:
            msg = await asyncio.wait_for(ws.recv(), timeout=5.0)
            received_messages.append(json.loads(msg))
        
        assert len(received_messages) == 5
        for msg in received_messages:
            assert msg['type'] == 'task_created'
            assert msg['data']['title'] == 'Broadcast Test Task'
    
    finally:
        # Clean up connections
        for ws in connections:
            await ws.close()


@pytest.mark.asyncio
async def test_05_websocket_error_handling(
    api_client: AsyncClient,
    test_users
):
    """Test WebSocket error handling scenarios"""
    
    token = test_users['user']['token']
    ws_url = f"{config.WS_BASE_URL}/ws?token={token}"
    
    async with websockets.connect(ws_url) as websocket:
        await websocket.recv()  # Welcome
        
        # Test 1: Invalid message format
        await websocket.send("invalid json {{{")
        error_msg = await asyncio.wait_for(websocket.recv(), timeout=5.0)
        error_data = json.loads(error_msg)
        assert error_data['type'] == 'error'
        assert 'message' in error_data
        
        # Test 2: Subscribe to non-existent channel
        await websocket.send(json.dumps({
            'type': 'subscribe',
            'channel': 'non_existent_channel'
        }))
        error_msg = await asyncio.wait_for(websocket.recv(), timeout=5.0)
        error_data = json.loads(error_msg)
        assert error_data['type'] == 'error'
        assert 'channel' in error_data['message'].lower()
        
        # Test 3: Invalid message type
        await websocket.send(json.dumps({
            'type': 'unknown_type',
            'data': {}
        }))
        error_msg = await asyncio.wait_for(websocket.recv(), timeout=5.0)
        error_data = json.loads(error_msg)
        assert error_data['type'] == 'error'
        
        # Connection should still be alive
        await websocket.send(json.dumps({'type': 'ping'}))
        pong = await asyncio.wait_for(websocket.recv(), timeout=5.0)
        assert json.loads(pong)['type'] == 'pong'
