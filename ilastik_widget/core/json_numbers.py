"""Numbers as JSON gives them: from the browser's messages, from project files and from users' keyword arguments.

JSON has no bounds on integers and Python parses them whole, so a crafted ``1e400`` written out as digits arrives
as an int that ``math.isfinite`` cannot convert (OverflowError): the checks here answer False instead."""

from __future__ import annotations

import math
from typing import Any


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite number as JSON gives it: an int or a float, not a bool, within float range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range, e.g. 10**400 from JSON
        return False
