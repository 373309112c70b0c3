"""The apps: captions, translate, look; and the host that runs them on one scheduler.

    host = Host(profile, clock, Devices(audio=..., camera=..., display=...), atlas, Models.scan(dir))
    host.add(make_app("translate"))
    report = host.run(duration_s)

Each app needs some kinds of models (`App.needs`); a missing one is a `MissingModel` error that
names the app and the fix, and the host keeps running the other apps.
"""

from __future__ import annotations

from runtime.apps.errors import AppError, AppUsageError, MissingModel
from runtime.apps.host import App, AppOptions, Devices, Host, Report
from runtime.apps.models import Models

__all__ = [
    "APPS",
    "App",
    "AppError",
    "AppOptions",
    "AppUsageError",
    "Devices",
    "Host",
    "MissingModel",
    "Models",
    "Report",
    "make_app",
]

APPS = ("captions", "translate", "look")


def make_app(name: str) -> App:
    if name == "captions":
        from runtime.apps.captions import Captions

        return Captions()
    if name == "translate":
        from runtime.apps.translate import Translate

        return Translate()
    if name == "look":
        from runtime.apps.look import Look

        return Look()
    raise AppUsageError(f"unknown app {name!r}; choose one of {', '.join(APPS)}")
