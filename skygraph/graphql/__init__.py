"""skygraph's GraphQL API (strawberry): the schema over `skygraph.api` and the
ASGI app serving it at `/graphql`, with subscriptions and an offline GraphiQL.

- `schema.py`: queries, mutations, subscriptions, limits, error masking;
- `types.py` / `filters.py` / `scalars.py`: output types, inputs, scalars;
- `loaders.py`: per-request context and dataloaders (batched reads);
- `app.py`: `make_app(api, ...)`, the ASGI app; `graphiql.py`: the page.
"""
