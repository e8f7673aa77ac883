#!/usr/bin/env python3
"""Regenerates the examples in docs/PROTOCOL.md from a real natter server.

Every example in the generated part of PROTOCOL.md is captured here: the
bytes a client sends are made by Python's own `pickle` (protocol 2) and
`json`, and the bytes the server sends are read off the socket exactly as
they arrived. Nothing is typed in by hand, so the document cannot drift
from the implementation without `--check` noticing.

    python3 docs/tools/hexdump_examples.py            # print the examples
    python3 docs/tools/hexdump_examples.py --write    # update PROTOCOL.md
    python3 docs/tools/hexdump_examples.py --check    # exit 1 if out of date

Without `--server HOST:PORT` it starts its own server with
`cargo run -q -- serve --listen 127.0.0.1:0 --presence-interval 0 --no-web` (no
periodic snapshots, so the capture is deterministic) and stops it after.
The server must be fresh: conversation ids start at 1.
"""

import argparse
import difflib
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "PROTOCOL.md")
BEGIN = "<!-- BEGIN GENERATED EXAMPLES (docs/tools/hexdump_examples.py) -->"
END = "<!-- END GENERATED EXAMPLES -->"
TIMEOUT = 5.0  # seconds for any single reply
QUIET = 0.4  # seconds of silence that count as "the connection stays open"


# ---------------------------------------------------------------------------
# Talking to the server and keeping the exact bytes
# ---------------------------------------------------------------------------

class Closed(Exception):
    """The server closed the connection."""


class Conn:
    """One client connection in one encoding; remembers the raw bytes of
    every message it reads."""

    def __init__(self, addr, encoding):
        self.encoding = encoding
        self.sock = socket.create_connection(addr, TIMEOUT)
        self.pending = b""  # bytes read from the socket but not consumed
        self.consumed = bytearray()  # bytes of the message being read

    # -- sending --

    def encode(self, word, args=None, has_args=None):
        """The bytes of one client message, made by pickle / json."""
        if has_args is None:
            has_args = args is not None
        if self.encoding == "json":
            obj = {"command": word}
            if has_args:
                obj["args"] = args
            return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        body = word.encode("ascii")
        if has_args:
            body += b" " + pickle.dumps(args, 2)
        if self.encoding == "framed":
            body = struct.pack(">I", len(body)) + body
        return body

    def send(self, word, args=None):
        data = self.encode(word, args)
        self.sock.sendall(data)
        return data

    def send_raw(self, data):
        self.sock.sendall(data)
        return data

    # -- receiving (the file-like methods are for the unpickler) --

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed()
        self.pending += chunk

    def read(self, n):
        while len(self.pending) < n:
            self._fill()
        data, self.pending = self.pending[:n], self.pending[n:]
        self.consumed += data
        return data

    def readinto(self, buf):
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def readline(self):
        while b"\n" not in self.pending:
            self._fill()
        end = self.pending.index(b"\n") + 1
        return self.read(end)

    def recv(self, timeout=TIMEOUT):
        """(raw bytes, word, args) of the next server message."""
        self.sock.settimeout(timeout)
        self.consumed = bytearray()
        if self.encoding == "json":
            line = self.readline()
            obj = json.loads(line.decode("utf-8"))
            return bytes(self.consumed), obj["command"], obj.get("args")
        if self.encoding == "framed":
            (length,) = struct.unpack(">I", self.read(4))
            body = self.read(length)
            word, _, rest = body.partition(b" ")
            return bytes(self.consumed), word.decode(), pickle.loads(rest)
        word = b""
        while True:
            byte = self.read(1)
            if byte == b" ":
                break
            word += byte
        args = pickle.Unpickler(self).load()
        return bytes(self.consumed), word.decode(), args

    def expect(self, word, skip=("ONLINE_USERS", "PRESENCE")):
        """The next message called `word`, skipping presence noise."""
        while True:
            raw, got, args = self.recv()
            if got == word:
                return raw, args
            if got not in skip:
                raise AssertionError("expected %s, got %s %r" % (word, got, args))

    def closed_soon(self):
        """True if the server closes the connection within QUIET seconds of
        silence (messages still in flight are read and dropped); False if
        it stays open."""
        self.sock.settimeout(QUIET)
        self.pending = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except OSError:
                return True
            if not data:
                return True

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------

def hexdump(data):
    """xxd-style lines: offset, 16 bytes in hex, printable ASCII."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        hexes = " ".join("%02x" % b for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append("%04x  %-47s  %s" % (offset, hexes, text))
    return "\n".join(lines)


def pyrepr(value):
    """Arguments as JSON-ish text for captions (None shown as None)."""
    if value is None:
        return "None"
    return json.dumps(value, ensure_ascii=False)


class Doc:
    def __init__(self):
        self.parts = []

    def text(self, s):
        self.parts.append(s)

    def frame(self, direction, word, args, data, has_args=True):
        caption = word + (" " + pyrepr(args) if has_args else "")
        self.parts.append("%s `%s` (%d bytes)\n\n```\n%s\n```\n" % (
            direction, caption, len(data), hexdump(data)))

    def render(self):
        return "\n".join(self.parts).rstrip() + "\n"


def sent(doc, conn, word, args=None, has_args=None):
    if has_args is None:
        has_args = args is not None
    data = conn.encode(word, args, has_args)
    conn.send_raw(data)
    doc.frame("client →", word, args, data, has_args)


def received(doc, conn, word):
    raw, args = conn.expect(word)
    doc.frame("server →", word, args, raw)
    return args


# ---------------------------------------------------------------------------
# The captures
# ---------------------------------------------------------------------------

def framed_session(doc, addr):
    doc.text("### Framed: a whole session\n")
    doc.text("alice and bob both connect in framed mode.\n")
    alice = Conn(addr, "framed")
    bob = Conn(addr, "framed")
    sent(doc, alice, "REGISTER", ["alice", "online"])
    received(doc, alice, "ONLINE_USERS")
    bob.send("REGISTER", ["bob", "online"])
    bob.expect("ONLINE_USERS")
    doc.text("(bob registers the same way; both get `ONLINE_USERS` with two users.)\n")
    sent(doc, alice, "INVITE", ["bob"])
    received(doc, alice, "INVITATION")
    bob.expect("INVITATION")
    sent(doc, bob, "JOIN", [1])
    bob.send("LIST_CONVERSATIONS")
    bob.expect("CONVERSATIONS")
    alice.send("JOIN", [1])
    doc.text("(alice joins too.) A command without arguments is the bare word:\n")
    sent(doc, alice, "LIST_CONVERSATIONS")
    received(doc, alice, "CONVERSATIONS")
    sent(doc, alice, "SEND_MESSAGE", [1, "hi bob"])
    received(doc, alice, "MESSAGE")
    bob.expect("MESSAGE")
    doc.text("bob gets the same bytes. An error:\n")
    sent(doc, alice, "JOIN", [99])
    received(doc, alice, "ERROR")
    sent(doc, bob, "GOODBYE")
    assert bob.closed_soon(), "the server closes after GOODBYE"
    doc.text("The server closes bob's connection; alice then gets "
             "`ONLINE_USERS {\"alice\": \"online\"}`.\n")
    alice.expect("ONLINE_USERS")
    alice.send("GOODBYE")
    assert alice.closed_soon()
    alice.close()
    bob.close()


def classic_session(doc, addr):
    doc.text("### Classic: the course's `COMMAND SP pickle`\n")
    carol = Conn(addr, "classic")
    sent(doc, carol, "REGISTER", ["carol", "online"])
    received(doc, carol, "ONLINE_USERS")
    doc.text("No arguments: the bare word, nothing after it.\n")
    sent(doc, carol, "LIST_CONVERSATIONS")
    received(doc, carol, "CONVERSATIONS")
    carol.send("GOODBYE")
    assert carol.closed_soon()
    carol.close()


def json_line(doc, direction, data):
    doc.parts.append("    %s %s" % (direction, data.decode("utf-8").rstrip("\n")))


def json_session(doc, addr):
    doc.text("### JSON lines\n")
    doc.text("Each line below is exactly what went over the wire (plus the "
             "`\\n` that ends it). dave and erin:\n")
    dave = Conn(addr, "json")
    erin = Conn(addr, "json")
    json_line(doc, "dave →", dave.send("REGISTER", ["dave", "online"]))
    json_line(doc, "dave ←", dave.recv()[0])
    erin.send("REGISTER", ["erin", "busy"])
    erin.expect("ONLINE_USERS")
    json_line(doc, "dave ←", dave.expect("ONLINE_USERS")[0])
    json_line(doc, "dave →", dave.send("INVITE", ["erin", "frank"]))
    json_line(doc, "dave ←", dave.expect("INVITATION")[0])
    json_line(doc, "dave ←", dave.expect("ERROR")[0])
    json_line(doc, "erin ←", erin.expect("INVITATION")[0])
    json_line(doc, "erin →", erin.send("JOIN", [2]))
    json_line(doc, "erin →", erin.send("LIST_CONVERSATIONS"))
    json_line(doc, "erin ←", erin.expect("CONVERSATIONS")[0])
    json_line(doc, "erin →", erin.send("SEND_MESSAGE", [2, "hello, \"dave\" ✓"]))
    json_line(doc, "erin ←", erin.expect("MESSAGE")[0])
    json_line(doc, "erin →", erin.send("STATUS", "away"))
    json_line(doc, "dave ←", dave.expect("ONLINE_USERS")[0])
    json_line(doc, "erin →", erin.send("GOODBYE"))
    assert erin.closed_soon()
    json_line(doc, "dave ←", dave.expect("ONLINE_USERS")[0])
    doc.text("")
    doc.text("Conversation 2 outlives erin: dave, the inviter, counts as "
             "invited, and an online invitee keeps a conversation even "
             "with no members:\n")
    json_line(doc, "dave →", dave.send("LIST_CONVERSATIONS"))
    json_line(doc, "dave ←", dave.expect("CONVERSATIONS")[0])
    doc.text("")
    dave.send("GOODBYE")
    assert dave.closed_soon()
    dave.close()


def extensions_session(doc, addr):
    doc.text("### Extensions: CAPS, PRESENCE and MEMBERS (JSON lines)\n")
    fay = Conn(addr, "json")
    gus = Conn(addr, "json")
    json_line(doc, "fay →", fay.send("CAPS", ["presence-delta", "members", "emoji-reactions"]))
    json_line(doc, "fay ←", fay.expect("CAPS")[0])
    json_line(doc, "fay →", fay.send("REGISTER", ["fay", "online"]))
    json_line(doc, "fay ←", fay.expect("ONLINE_USERS", skip=())[0])
    gus.send("REGISTER", ["gus", "online"])
    gus.expect("ONLINE_USERS")
    json_line(doc, "fay ←", fay.expect("PRESENCE", skip=())[0])
    gus.send("INVITE", ["fay"])
    conv = fay.expect("INVITATION", skip=())[1][0]
    json_line(doc, "fay →", fay.send("JOIN", [conv]))
    json_line(doc, "fay ←", fay.expect("MEMBERS", skip=())[0])
    gus.send("JOIN", [conv])
    json_line(doc, "fay ←", fay.expect("MEMBERS", skip=())[0])
    gus.send("GOODBYE")
    assert gus.closed_soon()
    json_line(doc, "fay ←", fay.expect("MEMBERS", skip=())[0])
    json_line(doc, "fay ←", fay.expect("PRESENCE", skip=())[0])
    json_line(doc, "fay →", fay.send("LEAVE", [conv]))
    json_line(doc, "fay ←", fay.expect("MEMBERS", skip=())[0])
    doc.text("")
    fay.send("GOODBYE")
    assert fay.closed_soon()
    fay.close()


def error_table(doc, addr):
    """What the server answers to mistakes, and whether it hangs up."""
    doc.text("### Errors, as the server answers them\n")
    doc.text("| encoding | sent | reply | connection |")
    doc.text("|---|---|---|---|")

    def row(encoding, shown, reply, closed):
        doc.text("| %s | %s | %s | %s |" % (
            encoding, shown, reply, "**closed**" if closed else "stays open"))

    def reply_of(conn):
        _, args = conn.expect("ERROR", skip=("ONLINE_USERS", "INVITATION"))
        return "`%s`" % args.replace("|", "\\|")

    def try_json(conn, obj_or_line, shown=None):
        line = obj_or_line if isinstance(obj_or_line, bytes) else (
            json.dumps(obj_or_line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        conn.send_raw(line)
        text = reply_of(conn)
        closed = conn.closed_soon()
        row("JSON", shown or "`%s`" % line.decode().strip().replace("|", "\\|"), text, closed)
        return closed

    # Before REGISTER.
    c = Conn(addr, "json")
    try_json(c, {"command": "LIST_CONVERSATIONS"})
    try_json(c, {"command": "REGISTER", "args": ["no spaces!", "online"]})
    try_json(c, {"command": "REGISTER", "args": ["x" * 33, "online"]})
    try_json(c, {"command": "REGISTER", "args": ["zed", "s" * 129]},
             '`{"command":"REGISTER","args":["zed","sss…"]}` (129-character status)')
    try_json(c, {"command": "REGISTER", "args": ["zed"]})
    try_json(c, {"command": "FLY", "args": [1]})
    # Registered.
    c.send("REGISTER", ["zed", "online"])
    c.expect("ONLINE_USERS")
    other = Conn(addr, "json")
    try_json(other, {"command": "REGISTER", "args": ["ZED", "online"]})
    other.close()
    try_json(c, {"command": "REGISTER", "args": ["zed2", "online"]})
    try_json(c, {"command": "CAPS", "args": ["members"]})
    try_json(c, {"command": "INVITE", "args": ["nobody"]})
    try_json(c, {"command": "INVITE", "args": ["zed"]})
    try_json(c, {"command": "INVITE", "args": []})
    try_json(c, {"command": "JOIN", "args": [99]})
    try_json(c, {"command": "JOIN", "args": ["1"]})
    try_json(c, {"command": "JOIN", "args": [-1]})
    try_json(c, {"command": "LEAVE", "args": [99]})
    try_json(c, {"command": "SEND_MESSAGE", "args": [99, "hi"]})
    # A conversation zed is invited to but not a member of.
    amy = Conn(addr, "json")
    amy.send("REGISTER", ["amy", "online"])
    amy.expect("ONLINE_USERS")
    amy.send("INVITE", ["zed"])
    conv = amy.expect("INVITATION")[1][0]
    c.expect("INVITATION")
    try_json(c, {"command": "SEND_MESSAGE", "args": [conv, "hi"]})
    try_json(c, {"command": "LEAVE", "args": [conv]})
    c.send("JOIN", [conv])
    try_json(c, {"command": "SEND_MESSAGE", "args": [conv, ""]})
    try_json(c, {"command": "SEND_MESSAGE", "args": [conv, "m" * 8193]},
             '`{"command":"SEND_MESSAGE","args":[%d,"mmm…"]}` (8193 bytes)' % conv)
    try_json(c, {"command": "STATUS", "args": ["a", "b"]})
    try_json(c, b'{"command": "STATUS", "args": ["unterminated]}\n',
             '`{"command": "STATUS", "args": ["unterminated]}`')
    c.close()
    amy.close()

    # Framed.
    def framed(data, shown):
        f = Conn(addr, "framed")
        f.send_raw(data)
        text = reply_of(f)
        row("framed", shown, text, f.closed_soon())
        f.close()
    framed(struct.pack(">I", 0), "length `00 00 00 00`")
    framed(struct.pack(">I", 65537) + b"REGISTER ", "length 65537 (over `--max-frame`)")
    evil = b"REGISTER cos\nsystem\n(S'echo hi'\ntR."
    framed(struct.pack(">I", len(evil)) + evil,
           "`REGISTER` + a pickle calling `os.system` (GLOBAL, REDUCE)")
    trailing = b"REGISTER " + pickle.dumps(["ann", "x"], 2) + b"junk"
    framed(struct.pack(">I", len(trailing)) + trailing, "a pickle followed by `junk` in the frame")

    # Classic.
    def classic(data, shown):
        k = Conn(addr, "classic")
        k.send_raw(data)
        text = reply_of(k)
        row("classic", shown, text, k.closed_soon())
        k.close()
    classic(b"HELLO " + pickle.dumps([1], 2), "`HELLO ` + pickle")
    classic(evil, "`REGISTER` + a pickle calling `os.system`")
    classic(b"REGISTERX", "`REGISTERX`")
    classic(b"JOIN " + pickle.dumps({1, 2}, 4), "`JOIN ` + a pickled set")

    # Unknown first byte.
    u = Conn(addr, "json")
    u.send_raw(b"hello\n")
    text = reply_of(u)
    row("(none)", "`hello` (first byte `h`)", text + " (a JSON line)", u.closed_soon())
    u.close()
    doc.text("")


def generate(addr):
    doc = Doc()
    doc.text("Captured from the real server by `docs/tools/hexdump_examples.py`; "
             "client bytes made by CPython's `pickle` (protocol 2) and `json`.\n")
    framed_session(doc, addr)
    classic_session(doc, addr)
    json_session(doc, addr)
    extensions_session(doc, addr)
    error_table(doc, addr)
    return doc.render()


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------

def start_server():
    """`natter serve` on a free port; returns (process, (host, port))."""
    command = ["cargo", "run", "-q", "--", "serve", "--ephemeral", "--listen", "127.0.0.1:0", "--no-web",
               "--presence-interval", "0"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()  # cargo may build first: no timeout here
    if not line.startswith("listening on "):
        proc.kill()
        sys.exit("the server did not start: %r" % line)
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, (host, int(port))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="HOST:PORT of a fresh running server")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update docs/PROTOCOL.md")
    mode.add_argument("--check", action="store_true", help="fail if PROTOCOL.md is stale")
    args = parser.parse_args()
    proc = None
    if args.server:
        host, port = args.server.rsplit(":", 1)
        addr = (host, int(port))
    else:
        proc, addr = start_server()
    try:
        generated = generate(addr)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    if not (args.write or args.check):
        sys.stdout.write(generated)
        return 0
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    head, sep, rest = doc.partition(BEGIN + "\n")
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        sys.exit("markers not found in %s" % DOC)
    current = rest[: rest.index(END)]
    if args.check:
        if current != generated:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(True), generated.splitlines(True), "PROTOCOL.md", "generated"))
            return 1
        return 0
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(head + BEGIN + "\n" + generated + END + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
