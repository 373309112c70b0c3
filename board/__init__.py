"""Host tools around a dev board: profiles, bundles, flashing (design.md section 2)."""
