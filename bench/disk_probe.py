#!/usr/bin/env python3
"""How long a commit's sync takes on a directory's disk: appends 12 KiB
(a commit's WAL frames, about) and fdatasyncs, a thousand times a second,
for SECONDS; prints the latencies as one JSON object. A durable server's
deliveries wait for such a sync, so its latency tail cannot be shorter
than this one.

Usage: disk_probe.py DIR [SECONDS=5]
"""
import json
import os
import sys
import time


def main():
    directory = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    path = os.path.join(directory, f"disk-probe.{os.getpid()}")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    block = b"x" * (12 * 1024)
    syncs = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            os.write(fd, block)
            started = time.perf_counter()
            os.fdatasync(fd)
            syncs.append(time.perf_counter() - started)
            time.sleep(0.001)
    finally:
        os.close(fd)
        os.unlink(path)
    syncs.sort()
    at = lambda q: round(syncs[min(len(syncs) - 1, int(q * len(syncs)))] * 1e3, 3)
    print(json.dumps({"syncs": len(syncs), "p50_ms": at(0.5), "p99_ms": at(0.99),
                      "p999_ms": at(0.999), "max_ms": round(syncs[-1] * 1e3, 1),
                      "over_20ms": sum(1 for s in syncs if s > 0.020)}))


if __name__ == "__main__":
    main()
