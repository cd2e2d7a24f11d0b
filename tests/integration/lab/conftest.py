"""The analyzer and Bolt fixtures of the API tests, for the lab's tests."""

from tests.integration.api.conftest import analyzer_at, fresh_graph

__all__ = ["analyzer_at", "fresh_graph"]
