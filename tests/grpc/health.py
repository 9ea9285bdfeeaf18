"""A real gRPC server and client for the plugin's gRPC abort tests (tests/tests/plugin_grpc.rs),
using grpcio and its standard health service (grpc.health.v1), so no generated code is needed.

  python health.py serve PORT      serve grpc.health.v1.Health (SERVING) on 127.0.0.1:PORT
                                   until SIGTERM; prints "ready" when listening
  python health.py check ADDR N    N unary Health/Check calls to ADDR (host:port, plain h2c);
                                   prints one JSON line per call: {"code", "details", "fault"}
                                   (fault: the x-boifi-fault metadata of the reply, if any)
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def serve(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop(grace=1).wait()


def check(addr: str, n: int) -> None:
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(n):
            try:
                _, call = stub.Check.with_call(health_pb2.HealthCheckRequest(), timeout=10)
                code, details, metadata = call.code(), call.details(), call.trailing_metadata()
            except grpc.RpcError as err:
                code, details = err.code(), err.details()
                metadata = tuple(err.trailing_metadata() or ()) + tuple(err.initial_metadata() or ())
            fault = dict(metadata or ()).get("x-boifi-fault")
            print(json.dumps({"code": code.name, "details": details, "fault": fault}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
