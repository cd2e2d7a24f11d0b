"""skygraph.topology."""
