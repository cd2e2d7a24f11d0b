"""skygraph: real-time network topology and flow analyzer on a Bolt/Cypher graph."""

__version__ = "0.1.0.dev0"
