"""The SDK's one exception type and the mapping from gRPC statuses to it."""

from __future__ import annotations

import grpc

# Statuses after which the same call may succeed later: Herald restarting, a
# dropped connection, a stream that fell too far behind.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class HeraldError(Exception):
    """A request Herald refused or could not serve.

    ``code`` is Herald's error code, the gRPC status in snake_case:
    ``invalid_argument``, ``not_found``, ``failed_precondition``,
    ``permission_denied``, ``unauthenticated``, ``resource_exhausted``,
    ``unavailable``, ... ``message`` is Herald's explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> HeraldError:
        code = err.code() if hasattr(err, "code") else None
        details = err.details() if hasattr(err, "details") else None
        name = code.name.lower() if isinstance(code, grpc.StatusCode) else "unknown"
        return cls(name, details or str(err))


def is_retryable(err: BaseException) -> bool:
    return isinstance(err, grpc.RpcError) and err.code() in RETRYABLE  # type: ignore[attr-defined]
