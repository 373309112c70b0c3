"""Manifests of the host-built artifacts verify on the device; a corrupt file is refused."""

from __future__ import annotations

import json
import shutil

from runtime.manifest import ManifestError, load_manifest


def test_every_artifact_verifies_on_the_device(ctx) -> None:
    artifacts = ctx.expect["artifacts"]
    assert artifacts, "the host built no artifacts"
    for name, facts in artifacts.items():
        m = load_manifest(ctx.work / name, verify_files=True)
        assert m.kind == facts["kind"], name
        assert sorted(f.sha256 for f in m.files) == facts["sha256"], name


def _expect_refused(directory, words) -> None:
    try:
        load_manifest(directory, verify_files=True)
    except ManifestError as e:
        for word in words:
            assert word in str(e), (word, str(e))
    else:
        raise AssertionError(f"{directory} was accepted")


def test_a_corrupt_or_truncated_file_is_refused(ctx) -> None:
    name = sorted(ctx.expect["artifacts"])[0]
    copy = ctx.tmp / name
    shutil.copytree(ctx.work / name, copy)
    victim = max(load_manifest(copy).files, key=lambda f: f.size).path
    data = bytearray((copy / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / victim).write_bytes(bytes(data))
    _expect_refused(copy, [victim])
    (copy / victim).write_bytes(bytes(data[:-1]))
    _expect_refused(copy, [victim])


def test_a_newer_schema_is_refused(ctx) -> None:
    name = sorted(ctx.expect["artifacts"])[0]
    copy = ctx.tmp / name
    shutil.copytree(ctx.work / name, copy)
    doc = json.loads((copy / "manifest.json").read_text())
    doc["schema_version"] += 1
    (copy / "manifest.json").write_text(json.dumps(doc))
    _expect_refused(copy, ["schema"])
