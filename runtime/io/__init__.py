"""Device interfaces: audio in, camera in, display out, each a small Protocol with backends.

The scheduler and the apps see only `AudioSource`, `Camera` and `Display`; the CLI (or the
agent on a board) picks the backends from a spec string and the board profile and passes them
in. Vendor libraries (linuxpy; libasound through ctypes) are loaded only inside their backend
modules.
Text for the display: `glyphs` (a pre-rendered atlas), `layout` (line breaking), `screen`
(paragraphs, styles, reading-rate scroll).
"""

from __future__ import annotations

from runtime.io.audio import AudioSource, WavSource, open_audio
from runtime.io.camera import Camera, FileCamera, PatternCamera, open_camera
from runtime.io.display import Display, VirtualDisplay, open_display
from runtime.io.errors import DeviceError, DeviceLost, ImageError, IoError

__all__ = [
    "AudioSource",
    "Camera",
    "DeviceError",
    "DeviceLost",
    "Display",
    "FileCamera",
    "ImageError",
    "IoError",
    "PatternCamera",
    "VirtualDisplay",
    "WavSource",
    "open_audio",
    "open_camera",
    "open_display",
]
