"""Limits of the annotation model, defined once: the core enforces them and the widget's protocol sends them to the
browser (which builds its class list and inputs from them)."""

from __future__ import annotations

#: Most label classes of a session: labels are stored as uint8 with 0 meaning unlabelled, and a class list longer
#: than this is not something a person paints with.
MAX_CLASSES = 64

#: Most characters of a class name (after stripping surrounding white space).
MAX_NAME_LENGTH = 100
