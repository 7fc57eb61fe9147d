"""KServe v2 / Open Inference Protocol front ends (REST and gRPC) and Prometheus metrics.

Import the submodules explicitly (`superserve.server.app`); this package imports nothing
heavy so that `superserve.server.proto` stays cheap for clients.
"""
