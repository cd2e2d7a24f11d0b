"""The analyzer's API layer: what GraphQL and the Skydive-compatible REST API
share (graph reads, Gremlin, captures, topology changes, status, auth)."""
