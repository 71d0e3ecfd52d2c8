"""Named fault-injection points on the promotion path, for crash tests (see :mod:`agentstack.faults`).

:mod:`deploy` calls :func:`point` after the new adapter is loaded (``promote.loaded``, before the
served alias moves) and after the swap is persisted (``promote.activated``).
"""

from __future__ import annotations

from agentstack.faults import FaultPoints

POINTS = ("promote.loaded", "promote.activated")

_points = FaultPoints(POINTS)
set_hook = _points.set_hook
point = _points.point
