#!/usr/bin/env python3
"""Prints, as one JSON object, what a measuring script records before its
data: the command, the commit (and whether the tree had uncommitted
changes), the date and the machine. Used by bench/*.sh.

Usage: run_record.py COMMAND...
"""
import datetime
import json
import os
import platform
import subprocess
import sys


def git(*args):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    done = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def main():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    status = git("status", "--porcelain", "--untracked-files=no")
    print(json.dumps({
        "command": " ".join(sys.argv[1:]),
        "commit": git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(status),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }))


if __name__ == "__main__":
    main()
