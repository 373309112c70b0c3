"""Online when it can: the router between the hosted model and the board's own, for the apps.

`make_router(host, llm)` builds it from the board profile's `[remote]` section, with the run's
options overriding the endpoint and model (`ocula run --remote URL`); it returns None when no
endpoint is set, and the apps then answer on the board alone as before. The API key is read
from the profile's `key_file` (the board's secrets) or the run's `remote_key_file` (a host
run); it is never logged, traced or sent anywhere but the endpoint.

The router's choices go into the trace on the `remote` track ("route", "remote failed",
"remote back"), and the governor's power state sets its preference: on a tight power budget
answers go remote (the radio costs less than the cores), otherwise the profile's `prefer`.

`frame_content(frame)` is the camera frame as an OpenAI image content part (a PNG data URL,
downscaled to at most `MAX_IMAGE_SIDE` pixels a side), the format vLLM serves for Qwen2.5-VL.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.apps.host import Host
from runtime.engine.llm import Llm
from runtime.engine.remote import Budgets, EnergyModel, RemoteConfig, RemoteLlm, Router
from runtime.engine.remote.client import read_key
from runtime.io.png import encode_png
from runtime.sched.governor import Policy

__all__ = ["MAX_IMAGE_SIDE", "frame_content", "make_router"]

log = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 448


def make_router(host: Host, llm: Llm | None) -> Router | None:
    cfg = host.profile.remote
    o = host.options
    endpoint = o.remote or (cfg.endpoint if cfg is not None else "")
    if not endpoint:
        return None
    key_file = o.remote_key_file or (cfg.key_file if cfg is not None else "")
    config = RemoteConfig(
        endpoint=endpoint,
        model=o.remote_model or (cfg.model if cfg is not None else ""),
        api_key=read_key(key_file) if key_file else "",
        ca_file=cfg.ca_file if cfg is not None else "",
    )
    budgets = (
        Budgets(first_token_s=cfg.first_token_s, stall_s=cfg.stall_s)
        if cfg is not None
        else Budgets()
    )
    power = host.profile.power
    energy = EnergyModel(
        core_active_w=power.core_active_w,
        cores=max(1, host.threads("llm")),
        radio_w=power.radio_w,
    )

    def note(name: str, **args: Any) -> None:
        host.trace.instant(name, "remote", "remote", **args)
        if name == "remote failed":
            host.metrics.inc("remote.failovers")

    router = Router(
        RemoteLlm(config, host.clock, advance_clock=not host.virtual),
        llm,
        host.clock,
        budgets,
        prefer=cfg.prefer if cfg is not None else "remote",
        energy=energy,
        note=note,
    )
    base = router.prefer

    def on_policy(policy: Policy) -> None:
        # on the power/thermal ladder the cores cost more than the radio: prefer remote
        prefer = "remote" if policy.level > 0 else base
        if prefer != router.prefer:
            router.prefer = prefer
            host.trace.instant(
                "remote preference", "remote", "remote", prefer=prefer, level=policy.level
            )

    host.governor.on_change(on_policy)
    log.info(
        "answers go to %r when it is up (%s)", config.endpoint, config.model or "server's model"
    )
    return router


def frame_content(frame: npt.NDArray[np.uint8]) -> dict[str, Any]:
    """An image content part (PNG data URL) of `frame`, downscaled by whole steps."""
    h, w = frame.shape[:2]
    step = max(1, -(-max(h, w) // MAX_IMAGE_SIDE))
    small = np.ascontiguousarray(frame[::step, ::step])
    data = base64.b64encode(encode_png(small)).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
