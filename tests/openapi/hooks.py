"""schemathesis hooks for tests/openapi/run.sh: a fresh HS256 token for every
request, signed with the running Herald's HERALD_JWT_SECRET.

The streaming operations (SSE, AG-UI) answer an endless event stream to a
valid request; Herald ends a stream when its token expires, so they get a
token that lives two seconds (the server runs with HERALD_JWT_LEEWAY=0s) and
every generated request to them finishes."""

import base64
import hashlib
import hmac
import json
import os
import time

import schemathesis

SECRET = os.environ["HERALD_JWT_SECRET"].encode()
STREAMING = ("/api/v1/stream", "/api/v1/agui/")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(ttl_seconds: int) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": "schemathesis", "roles": ["admin"], "exp": int(time.time()) + ttl_seconds}
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(SECRET, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


@schemathesis.auth(refresh_interval=None)
class HeraldToken:
    def get(self, case, context):
        streaming = case.operation.path.startswith(STREAMING)
        return mint(2 if streaming else 3600)

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
