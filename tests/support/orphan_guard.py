"""Runs a command and kills it when the process that started this guard exits.

Usage: orphan_guard.py COMMAND [ARGS...]
Lets tests share one long-running process (the operator) across test
functions without leaving it behind when the test binary exits. The command
also gets SIGTERM when the guard itself dies, even by SIGKILL (a test's
Child::kill): Linux's parent-death signal.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def die_with_parent():
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main():
    parent = os.getppid()
    child = subprocess.Popen(sys.argv[1:], preexec_fn=die_with_parent)
    try:
        while os.getppid() == parent and child.poll() is None:
            time.sleep(0.2)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    sys.exit(child.returncode or 0)


if __name__ == "__main__":
    main()
