"""Herald's Python SDK.

- :class:`Executor` runs an agent's executions (``@executor.run``, ``serve()``);
- :class:`Client` is the async client for backends and scripts;
- :class:`Reporter` (``Client.reporter()``) streams task progress, answered in order;
- :func:`task` is a synchronous helper reporting one task's progress;
- :mod:`herald.langgraph` runs a compiled LangGraph graph inside an execution.

Every refusal is a :class:`HeraldError` with Herald's ``code`` and ``message``.
"""

from ._errors import HeraldError
from .client import Client
from .executor import Context, Executor
from .reporter import Reporter
from .sync import TaskHandle, task
from .types import Agent, Approval, Decision, Event, Execution, Task

__all__ = [
    "Agent",
    "Approval",
    "Client",
    "Context",
    "Decision",
    "Event",
    "Execution",
    "Executor",
    "HeraldError",
    "Reporter",
    "Task",
    "TaskHandle",
    "task",
]
__version__ = "0.1.0"
