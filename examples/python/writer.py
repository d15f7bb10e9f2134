#!/usr/bin/env python3
"""A memchan writer using only the standard library: each os.write() is one message.

    python3 examples/python/writer.py DEVICE MESSAGE...
"""
import os
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} DEVICE MESSAGE...")
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CLOEXEC)
    for msg in sys.argv[2:]:
        os.write(fd, msg.encode())
    os.close(fd)


if __name__ == "__main__":
    main()
