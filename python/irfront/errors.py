"""Errors a user can act on: each names the IR node and says what to pass instead."""
from __future__ import annotations


class IRError(ValueError):
    """An IR program is malformed or cannot be evaluated; the message names the node
    (``Map[map_step]#3f2a``) and the fix."""

    def __init__(self, node_label: str, message: str):
        super().__init__(f"{node_label}: {message}")
        self.node = node_label


def note_node(exc: BaseException, node_label: str, detail: str = "") -> BaseException:
    """Adds a note naming the IR node to an exception raised by Ray (e.g. RayTaskError)."""
    note = f"raised while getting the results of IR node {node_label}{detail}"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    return exc
