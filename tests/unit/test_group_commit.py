"""Group commit: concurrent callers share one write; each gets its own outcome."""

from __future__ import annotations

import threading

import pytest

from web.group_commit import GroupCommit


def test_a_lone_caller_writes_at_once_in_its_own_thread():
    writers = []
    group = GroupCommit(lambda items: writers.append((threading.current_thread(), items)) or [None])
    group.submit("a")
    assert writers == [(threading.current_thread(), ["a"])]


def test_callers_that_arrive_during_a_write_are_written_together_in_the_next_one():
    first_write_started, release_first = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def write(items: list[str]) -> list[None]:
        batches.append(items)
        if len(batches) == 1:
            first_write_started.set()
            release_first.wait(5)
        return [None] * len(items)

    group = GroupCommit(write)
    leader = threading.Thread(target=group.submit, args=("first",))
    leader.start()
    assert first_write_started.wait(5)
    followers = [threading.Thread(target=group.submit, args=(f"f{i}",)) for i in range(5)]
    for thread in followers:
        thread.start()
    while len(group._waiting) < 5:
        threading.Event().wait(0.01)
    release_first.set()
    for thread in [leader, *followers]:
        thread.join(5)
    assert batches[0] == ["first"]
    assert sorted(batches[1]) == [f"f{i}" for i in range(5)]
    assert len(batches) == 2


def test_each_caller_gets_the_error_meant_for_its_item():
    group = GroupCommit(lambda items: [ValueError(item) if item == "bad" else None for item in items])
    group.submit("good")
    with pytest.raises(ValueError, match="bad"):
        group.submit("bad")


def test_a_failed_write_fails_every_item_of_its_batch_and_the_next_batch_still_runs():
    calls = []

    def write(items: list[str]) -> list[None]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return [None] * len(items)

    group = GroupCommit(write)
    with pytest.raises(RuntimeError, match="database is locked"):
        group.submit("a")
    group.submit("b")
    assert calls == [["a"], ["b"]]


def test_a_write_that_answers_for_the_wrong_number_of_items_fails_its_batch_and_frees_the_next():
    answers = iter([[], [None]])
    group = GroupCommit(lambda items: next(answers))
    with pytest.raises(RuntimeError, match="answered 0 of 1"):
        group.submit("a")
    group.submit("b")
