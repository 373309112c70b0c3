"""`look`: a camera frame -> OCR -> the LLM answers or translates what was read -> display.

Tasks:
- camera capture at the governor's camera rate (the profile's fps, halved on the first rung):
  each frame goes into the latest-frame slot; a frame nobody took is dropped and counted
  (`camera.stale_frames`). A camera that goes away stops this task with a message; the app
  finishes what it was doing and the other apps keep running;
- every `look_every_s` (or once, with `once`), the newest frame is read: an OCR job (priority
  VISION, in the ASR worker's pool: detection, then one recognition per text box, each a step),
  the text shown dimmed, then an LLM job (priority LLM, LLM pool) answering `question` about it
  (default: translate it into the target language), streamed to the display.
Latencies: `frame_to_text_s` (frame captured -> OCR text on screen) and `frame_to_answer_s`
(frame captured -> first answer characters on screen).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.apps.errors import AppUsageError
from runtime.apps.host import Host
from runtime.apps.online import frame_content, make_router
from runtime.apps.stream_to_screen import AnswerStream, stream_to_screen
from runtime.apps.translate import LANGUAGES
from runtime.engine.llm import GenerationConfig, Llm
from runtime.engine.vision import Ocr
from runtime.io.screen import SOURCE
from runtime.sched.governor import Policy
from runtime.sched.scheduler import Job, Priority, Task
from runtime.sched.slot import LatestSlot, Stamped

__all__ = ["Look"]

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
SYSTEM = "You read text that the wearer's camera sees and help them with it. Answer briefly."


class Look:
    name = "look"
    needs: tuple[str, ...] = ("vision", "llm")

    def __init__(self) -> None:
        self.host: Host | None = None
        self.slot: LatestSlot[U8] = LatestSlot()
        self.readings: list[str] = []
        self.answers: list[str] = []
        self._busy = False
        self._answering = False
        self._camera_lost = False
        self._done = False
        self._capture_task: Task | None = None

    def setup(self, host: Host) -> None:
        self.host = host
        if host.devices.camera is None:
            raise AppUsageError(
                "app 'look' needs a camera (--camera DIR|IMAGE|pattern|v4l2:/dev/videoN)"
            )
        if host.options.target_lang not in LANGUAGES:
            raise AppUsageError(
                f"language {host.options.target_lang!r} is not known; choose one of {', '.join(LANGUAGES)}"
            )
        vision_dir = host.models.need("vision", self.name)
        llm_dir = host.models.need("llm", self.name)
        self.camera = host.devices.camera
        self.ocr = Ocr.from_artifact(vision_dir, host.profile, threads=host.threads("asr"))
        self.llm = Llm.from_artifact(
            llm_dir, host.profile, threads=host.threads("llm"), max_length=host.options.max_length
        )
        self.router = make_router(host, self.llm)
        self.question = (
            host.options.question or f"Translate this into {LANGUAGES[host.options.target_lang]}."
        )
        fps = host.governor.policy.camera_fps
        self._capture_task = host.sched.every(
            "look.capture",
            1.0 / fps,
            self._capture,
            realtime=False,
            priority=Priority.VAD + 5,
            on_error=self._lost,
        )
        host.governor.on_change(self._policy)
        host.sched.every(
            "look.ask",
            host.options.look_every_s,
            self._ask,
            realtime=False,
            priority=Priority.VISION,
            phase_s=0.2,
        )

    def _policy(self, policy: Policy) -> None:
        if self._capture_task is not None:
            self._capture_task.period_s = 1.0 / max(0.1, policy.camera_fps)

    def _capture(self, now: float) -> None:
        frame = self.camera.capture(now)
        if frame is not None:
            self.slot.put(frame, now)
            assert self.host is not None
            self.host.metrics.set_counter("camera.stale_frames", self.slot.stale)
            self.host.trace.complete("camera frame", now, now, "camera", "camera")

    def _lost(self, exc: BaseException) -> None:
        self._camera_lost = True
        assert self.host is not None
        self.host.note(f"look: {exc}; the camera task stopped, the other apps keep running")

    def _ask(self, now: float) -> None:
        if self._busy or self._answering or self._done:
            return
        item = self.slot.take()
        if item is None:
            return
        self._busy = True
        assert self.host is not None
        marks: list[tuple[str, float]] = []
        self.host.sched.submit(
            Job("look.ocr", self._read(item, marks), Priority.VISION, marks=marks, pool="asr")
        )

    def _read(self, item: Stamped[U8], marks: list[tuple[str, float]]) -> Iterator[None]:
        host = self.host
        assert host is not None
        try:
            ocr = self.ocr.start(item.value)
            more = True
            while more:
                more = ocr.step()
                yield None
            text = " / ".join(t.text for t in ocr.result)
            self.readings.append(text)
            host.trace.instant("ocr", "app", "apps", text=text[:200], boxes=len(ocr.result))
            if not text:
                host.metrics.inc("look.no_text")
                if host.options.once:
                    self._done = True
                return
            host.screen.commit(f"[{text}]", SOURCE)
            marks.append(("frame_to_text_s", item.t))
            answer_marks: list[tuple[str, float]] = []
            self._answering = True
            host.sched.submit(
                Job(
                    "look.llm",
                    self._answer(text, item, answer_marks),
                    Priority.LLM,
                    marks=answer_marks,
                    pool="llm",
                )
            )
        finally:
            self._busy = False

    def _answer(
        self, text: str, item: Stamped[U8], marks: list[tuple[str, float]]
    ) -> Iterator[None]:
        host = self.host
        assert host is not None
        try:
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"The camera reads: {text}\n{self.question}"},
            ]
            policy = host.governor.policy
            gen: AnswerStream
            if self.router is not None:
                # online, the hosted model sees the frame itself (a product, not only its label)
                seen: list[dict[str, Any]] = [
                    {"role": "system", "content": SYSTEM},
                    {
                        "role": "user",
                        "content": [
                            frame_content(item.value),
                            {"type": "text", "text": f"The camera reads: {text}\n{self.question}"},
                        ],
                    },
                ]
                gen = self.router.start(seen, policy.max_tokens, local_messages=messages)
            else:
                ids = self.llm.encode_chat(self.llm.chat(messages))
                gen = self.llm.start(
                    ids, GenerationConfig(max_new_tokens=policy.max_tokens, truncate=True)
                )
            yield from stream_to_screen(
                host.screen, gen, lambda: marks.append(("frame_to_answer_s", item.t))
            )
            self.answers.append(gen.text)
            host.metrics.inc("look.answers")
            if host.options.once:
                self._done = True
        finally:
            self._answering = False

    @property
    def finished(self) -> bool:
        return not self._busy and not self._answering and (self._done or self._camera_lost)

    def summary(self) -> dict[str, Any]:
        return {"read": self.readings, "answers": self.answers, "camera_lost": self._camera_lost}
