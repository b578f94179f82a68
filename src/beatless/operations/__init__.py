"""Heavy operations on the worker: the catalogue, one runtime, the durable record of each
operation, its progress stream. See the README's "Heavy operations" section."""
