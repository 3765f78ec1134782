"""The byte-bounded LRU every cache of the kernel is made of."""

from __future__ import annotations

import threading

import numpy as np

from ilastik_widget.core.cache import ByteLRU


def test_least_recently_used_values_go_first_beyond_the_bound():
    cache: ByteLRU[np.ndarray] = ByteLRU(3 * 80)
    for key in "abc":
        cache.put(key, np.zeros(10))  # 80 bytes each
    cache.get("a")
    cache.put("d", np.zeros(10))
    assert cache.keys() == ["c", "a", "d"] and cache.nbytes == 240 and "b" not in cache
    cache.put("huge", np.zeros(100))  # larger than the bound: not kept
    assert "huge" not in cache and cache.nbytes == 240


def test_claimed_keys_are_computed_by_one_caller_and_waited_for_by_the_others():
    cache: ByteLRU[bytes] = ByteLRU(1000)
    cache.put("kept", b"x")
    mine, theirs = cache.claim(["a", "kept", "b", "a"])
    assert mine == ["a", "b"] and theirs == []  # a cached key is in neither list; duplicates count once
    mine2, theirs2 = cache.claim(["b", "c"])
    assert mine2 == ["c"] and [k for k, _ in theirs2] == ["b"]
    done = theirs2[0][1]
    assert not done.is_set()
    cache.put("b", b"yy")
    cache.release(mine)
    assert done.is_set() and cache.get("b") == b"yy"
    cache.release(mine2)
    assert cache.claim(["a"]) == (["a"], [])  # released without a value: the next caller computes it


def test_get_or_compute_computes_once_for_threads_asking_together():
    cache: ByteLRU[bytes] = ByteLRU(1000)
    started, go_on, calls = threading.Event(), threading.Event(), []

    def compute():
        calls.append(1)
        started.set()
        assert go_on.wait(30)
        return b"value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute))) for _ in range(3)]
    threads[0].start()
    assert started.wait(30)
    for t in threads[1:]:
        t.start()
    go_on.set()
    for t in threads:
        t.join(30)
    assert calls == [1] and results == [b"value"] * 3
