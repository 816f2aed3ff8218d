"""The Chronicle v1 gRPC API: generated message and service modules (``chronicle.protos.v1``).

Regenerate with ``python -m chronicle.protos.build``; never edit the ``*_pb2*`` files by hand.
"""
