"""Key values whose text lies about them, importable by child processes (unpickling).

Each subclass of a built-in prints the same text (``str``, ``repr``, ``format``)
whatever it holds, and its conversion methods lie too: only its built-in value tells
two instances apart.
"""

from __future__ import annotations

import enum

ALIKE = "alike"


class _PrintsAlike:
    """Prints as ``alike`` (``str``, ``repr``, ``format``) whatever the value holds."""

    def __str__(self) -> str:
        return ALIKE

    def __repr__(self) -> str:
        return ALIKE

    def __format__(self, spec: str) -> str:
        return ALIKE


class AlikeStr(_PrintsAlike, str):
    """A ``str`` that prints as ``alike`` whatever it holds."""


class AlikeInt(_PrintsAlike, int):
    """An ``int`` that prints as ``alike`` and converts to 0 whatever it holds."""

    def __int__(self) -> int:
        return 0

    def __index__(self) -> int:
        return 0


class AlikeFloat(_PrintsAlike, float):
    """A ``float`` that prints as ``alike`` and converts to 0.0 whatever it holds."""

    def __float__(self) -> float:
        return 0.0


class AlikeBytes(_PrintsAlike, bytes):
    """A ``bytes`` that prints as ``alike`` and converts to ``b""`` whatever it holds."""

    def __bytes__(self) -> bytes:
        return b""


class Perm(enum.IntFlag):
    """Flags whose combinations and out-of-range values are pseudo-members."""

    R = 4
    W = 2
    X = 1
