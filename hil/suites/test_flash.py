"""Flash, health check and rollback: a good bundle boots; a broken one rolls back by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.suites import bundles


def _key(request):
    key = request.config.getoption("--hil-key")
    return Path(key) if key else None


def test_flash_boots_and_passes_health_check(board, request, tmp_path):
    given = request.config.getoption("--bundle")
    path = (
        Path(given)
        if given
        else bundles.build(board.profile, tmp_path / "good.bundle", key=_key(request))
    )
    board.hello()
    result = board.flash(path, reboot_timeout=60)
    assert result.ok, result.reason
    assert result.booted in ("a", "b") and (result.health.get("ok") or result.already_installed)
    assert board.hello()["slot"] == result.booted
    assert board.evidence.chain["booted"] == result.booted


def test_broken_bundle_rolls_back(board, request, tmp_path):
    board.hello()
    before = board.call("info")["booted"]
    if before == "factory":  # give it a good slot to come back to
        good = bundles.build(board.profile, tmp_path / "good.bundle", key=_key(request))
        assert board.flash(good, reboot_timeout=60).ok
        before = board.call("info")["booted"]
    broken = bundles.build(
        board.profile, tmp_path / "broken.bundle", broken=True, key=_key(request)
    )
    result = board.flash(broken, reboot_timeout=60)
    if not result.ok and "unsigned" in result.reason:
        pytest.skip(f"the board only takes signed bundles: pass --hil-key ({result.reason})")
    assert not result.ok and result.rolled_back, result
    assert "vision" in result.reason
    assert board.hello(deadline=30)["slot"] == before
