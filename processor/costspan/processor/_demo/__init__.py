"""``costspan demo``: the demo's server, workload and the fake LLM provider it (and the tests) talk to.

Not part of the public API: nothing a user imports to run costspan loads this package.
"""
