"""One budget: what the export check accepts, the bundle declares, the agent accepts at flash
and the LLM engine runs within are the same sum (runtime.budget)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from board import bundle as bundles
from board import profiles
from export.budget import check, estimate
from export.errors import BudgetError
from runtime.agent.errors import BundleRejected
from runtime.agent.service import check_bundle
from runtime.engine.llm import Llm
from runtime.manifest import load_manifest
from tests.artifacts import llm_artifact


def _board(rss_mb: int):  # type: ignore[no-untyped-def]
    sim = profiles.find("sim")
    return dataclasses.replace(sim, budget=dataclasses.replace(sim.budget, max_rss_mb=rss_mb))


def test_an_artifact_that_fits_at_export_fits_at_flash_and_in_the_engine(tmp_path: Path) -> None:
    art = llm_artifact("tiny-qwen2", "int4")
    m = load_manifest(art)
    assert m.llm is not None
    need = math.ceil(estimate(m, profiles.find("sim")).rss_mb)
    tight = _board(need)  # the least RSS budget the export check accepts
    assert check(m, tight).fits
    with pytest.raises(BudgetError):
        check(m, _board(need - 1))
    out = tmp_path / "tight.bundle"
    bundles.build(tight, out, {"llm": art})
    b = bundles.Bundle.open(out)
    assert b.manifest.rss_mb <= need
    check_bundle(b.manifest, b.signature, tight, None)  # the agent accepts it
    llm = Llm.from_artifact(art, tight)
    assert llm.max_length == min(tight.budget.llm_max_tokens, m.llm.max_length)


def test_the_agent_refuses_what_the_bundle_declares_over_budget(tmp_path: Path) -> None:
    art = llm_artifact("tiny-qwen2", "int4")
    out = tmp_path / "b.bundle"
    bundles.build(profiles.find("sim"), out, {"llm": art})
    b = bundles.Bundle.open(out)
    with pytest.raises(BundleRejected, match=r"budget\.max_rss_mb"):
        check_bundle(b.manifest, b.signature, _board(b.manifest.rss_mb - 1), None)
