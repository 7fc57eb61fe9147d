"""The live runtime: router, worker protocol, worker pools (local processes, Ray), workers.

`router`, `clock`, `protocol` and `fake` import no torch; `worker` does, inside the worker
process only.
"""
