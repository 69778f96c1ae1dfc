"""Miner results -> store rows, and back: the only code that knows both the miners' results and the store's schema.

The miners return plain typed data (numpy arrays, dataclasses) and never import the store. One module per method
turns its results into the node and relationship tables of one run, with the stable ids of ``kgexplain.store.ids``:
``eg`` (explanatory-graph builds), ``aog`` (parts), ``info`` (information discarding), ``kp`` (knowledge points); they
share the Model / Layer / Filter / Image / Metric rows of ``shared``.
"""
