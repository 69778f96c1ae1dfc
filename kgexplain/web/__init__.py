"""A browsable view of a store: ``kgexplain report`` (a static site) and ``kgexplain serve`` (the same pages, live
and read-only, each with a JSON twin)."""
