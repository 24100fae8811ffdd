"""daaas policy core: pure decisions, snapshot in, actions out.

Nothing here reads a clock, sleeps, does I/O or draws global randomness. The twin (SimPy) and the
live VMM (libcloud) both build a `Snapshot`, call `decide`, and apply the `Action`s it returns.
"""
