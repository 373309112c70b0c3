"""Board profiles parse on the device to the same values as on the x86 host."""

from __future__ import annotations

import dataclasses
import json

from runtime.profile import load_profile


def test_profiles_load_as_on_the_host(ctx) -> None:
    host = ctx.expect["profiles"]
    assert host, "the host sent no profiles"
    for name, values in host.items():
        p = load_profile(ctx.work / "profiles" / f"{name}.toml")
        values_here = {k: v for k, v in dataclasses.asdict(p).items() if k != "source"}
        assert json.loads(json.dumps(values_here)) == values, name
