"""GraphQL API tests against a real uvicorn server and the embedded graph."""
