"""Runs moto's server on 127.0.0.1:PORT until the process that started it exits.

Prints "ready" once it accepts requests. Used by the tests (so no moto outlives
a test binary), the playground and the benchmarks.

It also counts AWS API calls by operation (the X-Amz-Target header, e.g.
"Scan", "Query", "Decrypt", "GetRecords"):
  GET  /_counts   -> {"Scan": 3, "Decrypt": 120, ...}
  POST /_counts   -> the same, and resets them to zero

One difference from DynamoDB is corrected: moto refuses to enable a stream on
a table that ever had one, while DynamoDB lets a disabled stream be followed
by a new one (with a new ARN), which kubestash must pick up.
"""
import json
import os
import sys
import threading
import time
from collections import Counter

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.dynamodb.exceptions import StreamAlreadyEnabledException
from moto.dynamodb.models import DynamoDBBackend
from werkzeug.serving import make_server

COUNTS_PATH = "/_counts"


class CountingApp:
    """WSGI middleware that counts calls per AWS operation."""

    def __init__(self, app):
        self.app = app
        self.counts = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with self.lock:
                body = json.dumps(dict(self.counts)).encode()
                if environ.get("REQUEST_METHOD") == "POST":
                    self.counts.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            with self.lock:
                self.counts[target.rsplit(".", 1)[-1]] += 1
        return self.app(environ, start_response)


def update_table_streams(backend, table, stream_specification):
    """DynamoDB's rule: a new stream may be enabled unless one is enabled now."""
    enabling = stream_specification.get("StreamEnabled") or stream_specification.get("StreamViewType")
    if enabling and (table.stream_specification or {}).get("StreamEnabled"):
        raise StreamAlreadyEnabledException
    table.set_stream_specification(stream_specification)


DynamoDBBackend.update_table_streams = update_table_streams


def main():
    port = int(sys.argv[1])
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    parent = os.getppid()
    try:
        while os.getppid() == parent:
            time.sleep(0.2)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
