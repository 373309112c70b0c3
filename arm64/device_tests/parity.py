"""Token parity with the x86_64 run, decided on the logits each choice was made from.

Two runs of the same greedy decoder on two architectures see logits that differ by the kernels'
rounding (measured per quantization, bounded by `tol`). Where the x86_64 run chose between two
tokens closer than that (a near tie, common on random-weight test models), the aarch64 run may
choose the other one, and from there on the two decode different prefixes. So:
- every decision taken on the same prefix (the equal tokens, and the first different one) must
  see logits within `tol` of the x86_64 run's;
- the tokens must be equal, or part at a decision that x86_64 took by less than `tol`.
"""

from __future__ import annotations

from typing import Any


def check_tokens(
    ctx: Any,
    label: str,
    mine: list[int],
    my_rows: list[list[float]],
    theirs: list[int],
    their_rows: list[list[float]],
    tol: float,
) -> None:
    pairs = zip(mine, theirs, strict=False)
    equal = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(mine), len(theirs)))
    steps = min(equal + 1, len(my_rows), len(their_rows))
    diff = max(
        (abs(a - b) for i in range(steps) for a, b in zip(my_rows[i], their_rows[i], strict=True)),
        default=0.0,
    )
    ctx.note(
        f"{label}: {equal} of {len(theirs)} tokens equal; "
        f"max |logit diff| vs x86_64 {diff:.2e} over {steps} decisions"
    )
    assert diff <= tol, f"{label}: logits differ from x86_64 by {diff:.2e} > {tol}"
    if mine == theirs:
        return
    assert equal < min(len(my_rows), len(their_rows)), (
        f"{label}: tokens differ at {equal} with no logits recorded for that decision"
    )
    row, my_row = their_rows[equal], my_rows[equal]
    # A run that ended (EOS) made its last choice without appending it: take it from its row.
    theirs_at = theirs[equal] if equal < len(theirs) else max(range(len(row)), key=row.__getitem__)
    mine_at = mine[equal] if equal < len(mine) else max(range(len(my_row)), key=my_row.__getitem__)
    gap = abs(row[theirs_at] - row[mine_at])
    assert gap <= tol, (
        f"{label}: at token {equal} aarch64 chose {mine_at}, which x86_64 scored {gap:.4f} away "
        f"from its choice {theirs_at} (more than the {tol} tolerance):\n"
        f"  aarch64 {mine}\n  x86_64  {theirs}"
    )
    ctx.note(
        f"{label}: tokens part at {equal}, a near tie (x86_64 scored the two choices {gap:.4f} apart)"
    )
