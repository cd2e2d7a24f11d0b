"""Browser tests of the GraphiQL page (skygraph.graphql.graphiql) in headless Chromium, offline."""
