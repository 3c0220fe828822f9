"""Concurrency at the acceptance's scale: 2 store instances x 4 processes x 4 threads."""

from __future__ import annotations

from tools.stress import run


def test_no_lost_update_and_no_resurrection(driver, server):
    counts = run(driver, processes=4, threads=4, saves=10_000, races=1_000)
    assert counts == {"saves": 10_000, "lost": 0, "races": 1_000, "resurrected": 0}


def test_the_stress_tool_sees_what_last_writer_wins_loses(driver, server):
    # The same work done as Odoo's own store does it must show losses, or the tool proves nothing.
    counts = run(driver, processes=4, threads=4, saves=2_000, races=200, baseline=True)
    assert counts["lost"] > 0
    assert counts["resurrected"] > 0
