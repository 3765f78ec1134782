"""Colours of label classes as ``"#rrggbb"`` text: checking them and reading their components."""

from __future__ import annotations

import re

COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


def check_color(color: object) -> str:
    """``color`` in lower case if it is ``"#rrggbb"``; ValueError naming it otherwise."""
    if not isinstance(color, str) or not COLOR_RE.match(color):
        raise ValueError(f"colour must be a string '#rrggbb', got {color!r}")
    return color.lower()


def rgb255(color: str) -> tuple[int, int, int]:
    """The 0..255 components of ``"#rrggbb"`` (white for anything else)."""
    if not isinstance(color, str) or not COLOR_RE.match(color):
        return (255, 255, 255)
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


def rgb01(color: str) -> tuple[float, float, float]:
    """The 0..1 components of ``"#rrggbb"`` (white for anything else)."""
    r, g, b = rgb255(color)
    return (r / 255.0, g / 255.0, b / 255.0)
