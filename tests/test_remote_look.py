"""`look` online: the frame itself goes to the remote in the OpenAI image format, and the answer
comes from the board's own OCR + LLM when the remote fails.

No server that takes images runs here (a vision-language model is too large for the test
machine), so the request is checked against the format that vLLM serves for Qwen2.5-VL and
OpenAI documents (a user message whose content is a list of parts, one `image_url` part with a
base64 data URL); the proxy answers it with an HTTP 500, and the answer must then come from the
local path, whole.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

from PIL import Image

from board import profiles
from runtime.apps import AppOptions, Devices, Host, Models, make_app
from runtime.apps.online import MAX_IMAGE_SIDE
from runtime.io import FileCamera, VirtualDisplay
from runtime.profile import Remote
from runtime.sched import VirtualClock
from tests.apps_helpers import atlas, models_dir
from tests.remote_helpers import FaultProxy

IMAGES = Path(__file__).parent / "data" / "images"
TRUTH = json.loads((IMAGES / "images.json").read_text())


def test_look_sends_the_frame_online_and_answers_locally_when_the_remote_fails(tmp_path: Path):
    models = models_dir(tmp_path / "models", ("llm", "vision"))
    glyphs = atlas(tmp_path)
    with FaultProxy("http://127.0.0.1:9/v1", "status", status=500) as proxy:
        profile = dataclasses.replace(
            profiles.find("sim"), remote=Remote(proxy.url, model="qwen2.5-vl")
        )
        camera = FileCamera(IMAGES / "sign_en.png")
        display = VirtualDisplay(tmp_path / "display", 480, 640)
        clock = VirtualClock()
        h = Host(
            profile,
            clock,
            Devices(camera=camera, display=display),
            glyphs,
            Models.scan(models),
            AppOptions(once=True),
        )
        assert h.add(make_app("look")), h.failures
        report = h.run(30.0)
    look = report.app_summaries["look"]
    assert look["read"] == [" / ".join(TRUTH["sign_en.png"])]
    assert len(look["answers"]) == 1 and look["answers"][0].strip()
    assert [e["args"]["status"] for e in h.trace.instants("remote failed")] == [500]
    # the request as the remote received it
    assert len(proxy.requests) == 1
    head, _, body = proxy.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1")
    req = json.loads(body)
    assert req["stream"] is True and req["model"] == "qwen2.5-vl" and req["max_tokens"] >= 1
    system, user = req["messages"]
    assert system["role"] == "system" and isinstance(system["content"], str)
    assert user["role"] == "user" and isinstance(user["content"], list)
    kinds = [part["type"] for part in user["content"]]
    assert kinds == ["image_url", "text"]
    url = user["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1], validate=True)))
    frame = Image.open(IMAGES / "sign_en.png")
    assert max(img.size) <= MAX_IMAGE_SIDE
    # downscaled by a whole step, aspect kept
    step = -(-max(frame.size) // MAX_IMAGE_SIDE)
    assert img.size == (-(-frame.size[0] // step), -(-frame.size[1] // step))
    assert TRUTH["sign_en.png"][0] in user["content"][1]["text"]
