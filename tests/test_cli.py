"""The `ocula` command as a user sees it: help everywhere, one-line errors, exit codes."""

from __future__ import annotations

import json

import pytest


def test_help_lists_only_working_commands(ocula):
    r = ocula("--help")
    assert r.code == 0
    assert "board" in r.out and "demo" in r.out
    assert "not implemented" not in r.out.lower()


@pytest.mark.parametrize(
    "args",
    [
        ["board", "--help"],
        ["board", "list", "--help"],
        ["board", "show", "--help"],
        ["demo", "--help"],
    ],
)
def test_every_command_has_help(ocula, args):
    r = ocula(*args)
    assert r.code == 0, r.err
    assert r.out.startswith("usage: ocula")


def test_board_list_and_show(ocula):
    r = ocula("board", "list")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "SOC", "ARCH"]
    assert [line.split()[0] for line in lines[1:]] == ["ar1-ref", "qemu", "rpi5", "sim"]
    r = ocula("board", "show", "ar1-ref")
    assert r.code == 0
    assert "ram_mb                 2048 MiB  (estimate)" in r.out
    assert "colour                 mono-green" in r.out


def test_board_json_for_scripts(ocula):
    data = json.loads(ocula("board", "list", "--json").out)
    assert {d["name"] for d in data} == {"ar1-ref", "qemu", "rpi5", "sim"}
    shown = json.loads(ocula("board", "show", "rpi5", "--json").out)
    assert shown["cpu"]["clusters"][0]["cores"] == 4
    assert shown["budget"] == {"max_artifact_mb": 4096, "max_rss_mb": 6144, "llm_max_tokens": 2048}


def test_user_error_is_one_line_exit_1(ocula):
    r = ocula("board", "show", "rpi9")
    assert r.code == 1
    assert r.out == ""
    assert r.err.splitlines() == [
        "ocula: error: unknown board 'rpi9'; known boards: ar1-ref, qemu, rpi5, sim "
        "(or give the path to a profile .toml)"
    ]
    assert "Traceback" not in r.err


def test_bad_profile_file_is_one_line(ocula, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[board]\nname = 1\n")
    r = ocula("board", "show", str(bad))
    assert r.code == 1
    assert r.err.startswith(f"ocula: error: {bad}: board.name: expected a string")
    assert len(r.err.splitlines()) == 1


@pytest.mark.parametrize(
    "args", [[], ["frobnicate"], ["board"], ["board", "show"], ["board", "list", "--bogus"]]
)
def test_usage_errors_are_one_line_exit_2(ocula, args):
    r = ocula(*args)
    assert r.code == 2, (args, r.err)
    lines = r.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocula: error: "), r.err


def test_verbosity_flags_are_accepted_everywhere(ocula):
    assert ocula("-q", "board", "list").code == 0
    assert ocula("board", "-v", "list").code == 0
    assert ocula("board", "list", "-vv").code == 0


def test_demo_from_nothing_says_what_it_does(ocula, tmp_path):
    out = tmp_path / "demo-out"
    r = ocula("demo", "--out", str(out), env={"OCULA_SIM_DIR": str(tmp_path / "sim")})
    assert r.code == 0, r.err
    assert "Ocula demo (offline)" in r.out
    # real models by default: the transcript of real speech, its WER, what a 135M model can't do
    assert "SmolLM2-135M-Instruct" in r.out and "word error rate:" in r.out
    assert "transcript:" in r.out and "ocula export llm" in r.out
    assert "onnxruntime" in r.out and "board rpi5" in r.out
    assert "health check passed" in r.out
    assert (out / "report.html").is_file()
