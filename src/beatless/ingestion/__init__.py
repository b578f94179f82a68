"""Ingestion of uploaded files into a graph: staged and validated in DuckDB
(`validation`), then loaded by the graph's node, all or nothing (`operations`)."""
