"""FaultPoints.raising: the named point raises inside the block only, other points pass, and an
unknown name is refused before anything runs."""

from __future__ import annotations

import errno

import pytest

from agentstack.faults import FaultPoints


def test_raising_fails_the_named_point_inside_the_block_only():
    points = FaultPoints(["a", "b"])
    with points.raising("b"):
        points.point("a")
        with pytest.raises(OSError) as failed:
            points.point("b")
    assert failed.value.errno == errno.ENOSPC
    points.point("b")  # the hook is gone after the block


def test_raising_removes_the_hook_when_the_block_raises_and_takes_a_given_error():
    points = FaultPoints(["a"])
    with pytest.raises(KeyError), points.raising("a", KeyError("injected")):
        points.point("a")
    points.point("a")


def test_raising_an_unknown_point_is_refused():
    with pytest.raises(ValueError, match="unknown fault point 'c'; known: a"), FaultPoints(["a"]).raising("c"):
        pass
