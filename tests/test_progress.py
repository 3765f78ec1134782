"""The progress of prediction work: counts, time left, the status line's words."""

from __future__ import annotations

from ilastik_widget.widget.progress import PredictionProgress, Snapshot


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_counts_and_time_left_follow_the_pace_so_far():
    clock = Clock()
    p = PredictionProgress(clock)
    p.add(10)
    assert p.snapshot() == Snapshot(0, 10, None)
    clock.now += 4
    p.finish(2)
    assert p.snapshot() == Snapshot(2, 10, 16.0)  # 2 s per chunk, 8 left
    assert p.snapshot().text() == "Predicting 2 of 10 chunks… about 16 s left"
    p.add(2)  # more asked for within the same busy period
    assert p.snapshot().total == 12
    p.finish(10)
    assert p.snapshot().pending == 0 and p.snapshot().to_json() == {} and p.snapshot().text() == ""
    clock.now += 100
    p.add(1)  # a new busy period starts its own clock
    clock.now += 1
    p.finish(0)
    assert p.snapshot() == Snapshot(0, 1, None)


def test_long_work_is_said_in_minutes_and_updates_are_rate_limited():
    clock = Clock()
    p = PredictionProgress(clock)
    p.add(100)
    clock.now += 60
    p.finish(10)
    assert p.snapshot().text().endswith("about 9 min left")
    assert p.due() and not p.due()
    clock.now += 0.6
    assert p.due()
