"""One base class for every error napari-seamless raises on purpose.

Every error the package raises for bad input, an unsupported model or a failed check is a
:class:`SeamlessError`, so a caller (the CLI, the widget, a script) can catch them all and
show the message, which is written as one sentence that says what was wrong and what to
do. Anything else that escapes is a bug. Each subclass also derives from the built-in
exception it refines (mostly :class:`ValueError`), so older ``except ValueError`` code keeps
working. This module imports nothing heavy.
"""

from __future__ import annotations

__all__ = ["ArgumentError", "ArgumentTypeError", "SeamlessError"]


class SeamlessError(Exception):
    """Base class of the errors napari-seamless raises on purpose; the message is for people."""


class ArgumentError(SeamlessError, ValueError):
    """An argument whose value cannot work: out of range, the wrong shape, an unknown name."""


class ArgumentTypeError(SeamlessError, TypeError):
    """An argument of a kind that is not accepted, e.g. a list where an array belongs."""
