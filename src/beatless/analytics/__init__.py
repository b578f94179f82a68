"""Graph analytics on the worker: communities (Louvain) and entity resolution."""
