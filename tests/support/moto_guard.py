"""Runs moto's server on 127.0.0.1:PORT until the process that started it exits.

Prints "ready" once it accepts requests. Used by the tests (so no moto outlives
a test binary) and by the playground.
"""
import os
import sys
import time

from moto.server import ThreadedMotoServer


def main():
    port = int(sys.argv[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print("ready", flush=True)
    parent = os.getppid()
    try:
        while os.getppid() == parent:
            time.sleep(0.2)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
