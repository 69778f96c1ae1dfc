"""Graph schema files (labels, keys, properties, indexes) for both store backends, installed as kgexplain.schema.

The store package reads them with ``importlib.resources.files("kgexplain.schema")``; they are the single source
of truth for what the graph holds.
"""
