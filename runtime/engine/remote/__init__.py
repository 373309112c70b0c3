"""The remote LLM engine and the router that fails over to the local one.

- `sse.py`: server-sent events, sans-IO (bytes in, events out), bounded;
- `client.py`: `RemoteLlm`, a streamed OpenAI-compatible chat-completions client (stdlib only);
- `router.py`: `Router`, remote when healthy, local otherwise, switching mid-answer.
"""

from runtime.engine.remote.client import RemoteConfig, RemoteError, RemoteGeneration, RemoteLlm
from runtime.engine.remote.router import Answer, Budgets, EnergyModel, Health, Router

__all__ = [
    "Answer",
    "Budgets",
    "EnergyModel",
    "Health",
    "RemoteConfig",
    "RemoteError",
    "RemoteGeneration",
    "RemoteLlm",
    "Router",
]
