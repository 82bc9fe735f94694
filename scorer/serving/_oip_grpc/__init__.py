"""The Open Inference Protocol's gRPC messages (package ``inference``), generated code committed here.

``grpc_predict_v2.proto`` is KServe's (Apache-2.0; its header says where it was copied from);
``grpc_predict_v2_pb2.py`` and ``grpc_predict_v2_pb2.pyi`` are generated from it, unchanged, by
grpcio-tools 1.70.0 (protoc 29.0, protobuf Python gencode 5.29.0)::

    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. grpc_predict_v2.proto

Committed rather than generated at build time, so that building scorer needs no protoc and the
default install stays free of grpc: the code is only imported with ``--grpc-port`` set. Gencode 5.29
loads on every protobuf runtime from 5.29 on (a runtime refuses only gencode newer than itself; tested
with 5.29.6, 6.33.6 and 7.36.2): the ``grpc`` extra asks for ``protobuf>=5.29``. No ``_pb2_grpc.py``: the
service's six methods are registered by :mod:`scorer.serving.grpc_v2` with grpc's generic handler, which ties
the code to no grpcio-tools version.

The messages are registered in protobuf's default descriptor pool, under ``grpc_predict_v2.proto``
and the package ``inference`` the wire needs. A process that also loads another definition of these
names (Triton's ``grpc_service.proto`` through ``tritonclient.grpc``, or KServe's own) fails to
import the second one: a bundle whose code imports those clients cannot be served with gRPC on.
"""
