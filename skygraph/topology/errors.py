"""Errors raised by the topology core; each names the element and the field."""

from __future__ import annotations


class TopologyError(Exception):
    """Base of every error the topology core raises."""


class ValidationError(TopologyError):
    """An element is malformed. `element` is its ID (or a description), `field` the key."""

    def __init__(self, element: str, field: str, reason: str) -> None:
        self.element = element
        self.field = field
        self.reason = reason
        super().__init__(f"{element}: field {field!r}: {reason}")


class NotFoundError(TopologyError):
    """A mutation names an element that does not exist."""


class StoreError(TopologyError):
    """The graph database refused or could not be reached; the message says which and why."""


class StoreUnavailable(StoreError):
    """The graph database cannot be reached (down, restarting, network)."""
