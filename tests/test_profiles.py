"""Board profiles: the shipped ones load, and every kind of bad profile is refused clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from board import profiles
from runtime.errors import ProfileError
from runtime.profile import load_profile, parse_profile

GOOD = (profiles.PROFILE_DIR / "rpi5.toml").read_text()


def test_shipped_profiles_load_with_their_figures():
    assert profiles.names() == ["ar1-ref", "qemu", "rpi5", "sim"]
    rpi5 = profiles.find("rpi5")
    assert rpi5.cpu.total_cores == 4
    assert rpi5.cpu.big.core == "Cortex-A76" and rpi5.cpu.big.max_mhz == 2400
    assert rpi5.memory.usable_bandwidth_gbs == 10.0
    assert rpi5.is_estimate("memory.usable_bandwidth_gbs")
    ar1 = profiles.find("ar1-ref")
    assert ar1.memory.ram_mb == 2048 and ar1.budget.max_rss_mb == 700
    assert (ar1.display.width, ar1.display.height, ar1.display.colour) == (480, 640, "mono-green")
    assert (ar1.audio.rate, ar1.audio.channels) == (16000, 4)
    assert (ar1.power.average_budget_w, ar1.power.burst_budget_w) == (0.2, 1.5)
    assert ar1.power.battery and ar1.camera.width * ar1.camera.height == 12_000_000
    assert profiles.find("sim").board.arch == "x86_64"
    qemu = profiles.find("qemu")
    assert (qemu.board.arch, qemu.cpu.total_cores, qemu.memory.ram_mb) == ("aarch64", 2, 1024)
    assert (qemu.serial.device, qemu.display.interface) == ("/dev/hvc0", "fbdev")
    assert (qemu.display.width, qemu.display.height, qemu.audio.rate, qemu.audio.channels) == (
        640, 480, 16000, 1
    )  # fmt: skip


def test_every_estimated_figure_is_commented_as_one_in_the_file():
    for name in profiles.names():
        p = profiles.find(name)
        lines: dict[str, str] = {}
        section = ""
        for line in Path(p.source).read_text().splitlines():
            if line.startswith("["):
                section = line.strip("[]")
            elif "=" in line:
                lines[f"{section}.{line.split('=')[0].strip()}"] = line
        for key in p.board.estimates:
            if key == "cpu.clusters":  # a table array: the comment sits on its `core` line
                key = "cpu.clusters.core"
            assert "estimate" in lines[key], (name, key, lines[key])


def test_profiles_are_frozen():
    p = profiles.find("sim")
    with pytest.raises(AttributeError):
        p.memory.ram_mb = 1  # type: ignore[misc]


def _bad(old: str, new: str, expect: str) -> None:
    assert old in GOOD, old
    with pytest.raises(ProfileError) as info:
        parse_profile(GOOD.replace(old, new, 1), source="boards/x.toml")
    message = str(info.value)
    assert message.startswith("boards/x.toml: "), message
    assert expect in message, message


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        # unknown key, in a section and at the top
        (
            "[memory]\n",
            "[memory]\nram_gb = 8\n",
            "[memory]: unknown key 'ram_gb'; expected one of: ram_mb",
        ),
        ("[board]\n", "[gpu]\ncores = 1\n\n[board]\n", "the top level: unknown key 'gpu'"),
        # missing field and missing section
        ("ram_mb = 8192\n", "", "missing key 'ram_mb' in [memory]"),
        ("[thermal]\nlimit_c = 85", "", "missing section [thermal]"),
        # wrong types
        (
            "ram_mb = 8192",
            'ram_mb = "8 GB"',
            "memory.ram_mb: expected an integer, got a string ('8 GB')",
        ),
        (
            "ram_mb = 8192",
            "ram_mb = 8192.5",
            "memory.ram_mb: expected an integer, got a number (8192.5)",
        ),
        (
            "battery = false",
            "battery = 0",
            "power.battery: expected true or false, got an integer (0)",
        ),
        ("idle_w = 2.7", "idle_w = true", "power.idle_w: expected a number, got a boolean (True)"),
        ('soc = "Broadcom BCM2712"', "soc = 2712", "board.soc: expected a string"),
        # negative and absurd values
        ("ram_mb = 8192", "ram_mb = -5", "memory.ram_mb: -5 MiB is out of range; expected 64 to"),
        (
            "max_mhz = 2400",
            "max_mhz = 240000",
            "cpu.clusters[0].max_mhz: 240000 MHz is out of range",
        ),
        ("refresh_hz = 30", "refresh_hz = -30", "display.refresh_hz: -30 Hz is out of range"),
        ("idle_w = 2.7", "idle_w = 1e9", "power.idle_w: 1000000000.0 W is out of range"),
        # choices
        (
            'colour = "mono-green"',
            'colour = "purple"',
            "display.colour: 'purple' is not allowed; expected one of",
        ),
        ('arch = "aarch64"', 'arch = "mips"', "board.arch: 'mips' is not allowed"),
        # figures that cannot be true together
        (
            "max_rss_mb = 6144",
            "max_rss_mb = 9000",
            "budget.max_rss_mb (9000 MiB) exceeds memory.ram_mb (8192 MiB)",
        ),
        (
            "usable_bandwidth_gbs = 10.0",
            "usable_bandwidth_gbs = 20.0",
            "usable bandwidth cannot exceed the peak",
        ),
        (
            '"thermal.limit_c",',
            '"thermal.limit",',
            "board.estimates names 'thermal.limit', which is not a profile key",
        ),
        (
            "average_budget_w = 8.0",
            "average_budget_w = 20.0",
            "power.burst_budget_w is below power.average_budget_w",
        ),
        # broken TOML
        ("[memory]\n", "[memory\n", "not valid TOML"),
    ],
)
def test_bad_profile_names_file_key_and_expectation(old, new, expect):
    _bad(old, new, expect)


def test_section_that_is_not_a_table_is_refused():
    text = "thermal = 5\n" + GOOD.replace("[thermal]\nlimit_c = 85", "")
    with pytest.raises(ProfileError, match=r"\[thermal\]: expected a table, got an integer"):
        parse_profile(text, source="x.toml")


def test_empty_cluster_list_is_refused():
    text = re.sub(r"\[\[cpu\.clusters\]\][^\[]*", "[cpu]\nclusters = []\n\n", GOOD)
    with pytest.raises(ProfileError, match=r"cpu.clusters: expected at least one entry"):
        parse_profile(text, source="x.toml")


def test_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(
        ProfileError, match=r"unknown board 'rpi9'; known boards: ar1-ref, qemu, rpi5, sim"
    ):
        profiles.find("rpi9")


def test_profile_file_errors(tmp_path):
    with pytest.raises(ProfileError, match=r"missing.toml: no such board profile file"):
        profiles.find(str(tmp_path / "missing.toml"))
    with pytest.raises(ProfileError, match=r"cannot read the board profile"):
        load_profile(tmp_path / "nothing.toml")
    mine = tmp_path / "myboard.toml"
    mine.write_text(GOOD.replace('name = "rpi5"', 'name = "myboard"'))
    assert profiles.find(str(mine)).name == "myboard"
