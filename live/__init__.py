"""The live shell: the VMM loop, its durable store, the portal, and the cloud adapters (live.clouds).

Everything here talks to the outside world (clouds over HTTP, a database, the wall clock) and hands
the pure policy in `core/` plain snapshots; nothing is wired at import time.
"""
