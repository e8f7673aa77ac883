#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""A small natter client in the style of the course notes (week 6).

It does what the notes ask of an IM client:

1. connect to the server (and say clearly when the server is down),
2. send commands: a command word plus pickled arguments,
3. run a listener thread that prints what the server sends whenever it
   arrives (ONLINE_USERS comes without being asked for),
4. disconnect with GOODBYE.

Run it (the server must be running, e.g. `cargo run -- serve`):

    python3 natter_client.py alice
    python2.7 natter_client.py --classic --port 6666 bob away
    python3 natter_client.py --tls --ca-file cert.pem --host localhost carol
    python3 natter_client.py --password-file dan.password --signup dan

(`--tls` encrypts the connection with the standard `ssl` module, Python 3
or 2.7.9+, and checks the server's certificate against the system's CAs,
or only against `--ca-file`, e.g. the cert.pem of `natter cert
--self-signed`. Give the host name the certificate names.)

An account's name needs its password: `--password` asks for it without
echo (getpass), `--password-file FILE` reads it from the first line of a
file, and `--signup` creates the account first (SIGNUP). The password is
never taken from the command line, where anyone on the machine could see
it (`ps`), and it crosses the network in clear text unless `--tls` is
given. Without a password the name is registered as a guest's.

then type commands, one per line:

    /invite bob carol     create a conversation, invite people, and join it
    /join 3               become a member of conversation 3
    /send 3 hello         send "hello" to conversation 3
    hello                 (plain text) send to the conversation joined last
    /leave 3              stop being a member of conversation 3
    /list                 list the conversations
    /status away          change your status
    /history 2            the last 2 messages (default 20) of the
                          conversation joined last
    /quit                 say GOODBYE and exit (end of input does the same)

Every message from the server is printed as one line, for example
`MESSAGE 3 alice: hello` or `ONLINE_USERS alice=online bob=away`; a
HISTORY answer as a line per stored message.

Before REGISTER the client asks for the `history` extension (CAPS). A
natter server that keeps history (the default, `natter serve`) grants it:
messages then carry a fourth element, {"seq": n, "ts": ms}, and /history
works. A server started with --ephemeral keeps none, and /history says so.

Two encodings are supported (docs/PROTOCOL.md describes both):

* framed (default, recommended): every message is a 4-byte big-endian
  length followed by `COMMAND SP pickle`, so the reader always knows where
  a message ends;
* classic (`--classic`): `COMMAND SP pickle` with no length, as in the
  notes. The reader finds the end of each message by letting the unpickler
  read the socket until the pickle's STOP opcode.

Only the standard library is used, and the file runs unchanged under
Python 3 and Python 2.7. Pickles are written with protocol 2, which both
can read. Pickles are read with SafeUnpickler, which refuses to import
anything: a pickle can name any function in Python and have it called, so
a normal `pickle.loads` on data from the network lets the sender run code
on your machine.
"""

from __future__ import print_function

import argparse
import getpass
import io
import os
import pickle
import socket
import ssl
import struct
import sys
import threading
import time

# Python 2 calls text `unicode`, Python 3 calls it `str`.
try:
    TEXT = unicode  # noqa: F821 (Python 2 only)
except NameError:
    TEXT = str

DEFAULT_PORT = 6666  # the course server's port
PICKLE_PROTOCOL = 2  # the newest protocol Python 2 can load
MAX_FRAME = 16 * 1024 * 1024 - 1  # the largest frame a natter server sends
CONNECT_TIMEOUT = 10.0  # seconds to wait for the server to accept us
REPLY_TIMEOUT = 10.0  # seconds to wait for the answer to REGISTER
GOODBYE_TIMEOUT = 5.0  # seconds to wait for the server to close after GOODBYE
HISTORY_DEFAULT = 20  # messages /history shows when no number is given


class ProtocolError(Exception):
    """The server sent something this client cannot decode."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that reads data (None, numbers, strings, lists, tuples,
    dicts) and refuses everything else.

    Loading a class or function always goes through find_class, so refusing
    it there means a pickle can never make us import or call anything.
    """

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            "refusing to load %s.%s: only plain data is accepted" % (module, name))


def safe_loads(data):
    """pickle.loads, but through SafeUnpickler."""
    return SafeUnpickler(io.BytesIO(data)).load()


def to_text(value):
    """Bytes (a Python 2 str) become text; everything else is unchanged."""
    if isinstance(value, bytes) and not isinstance(value, TEXT):
        return value.decode("utf-8", "replace")
    return value


def as_bytes(text):
    """Text to UTF-8 bytes, for writing to the socket or to stdout."""
    if isinstance(text, TEXT):
        return text.encode("utf-8")
    return text


# Where printed lines go: the binary stdout, so that the same UTF-8 bytes
# come out under Python 2 and 3 whatever the terminal's locale says.
STDOUT = getattr(sys.stdout, "buffer", sys.stdout)
STDIN = getattr(sys.stdin, "buffer", sys.stdin)
print_lock = threading.Lock()


def say(line):
    """Prints one line; both threads print, so one at a time."""
    with print_lock:
        STDOUT.write(as_bytes(line) + b"\n")
        STDOUT.flush()


# ---------------------------------------------------------------------------
# Showing server messages as one line each
# ---------------------------------------------------------------------------

def one_line(text):
    """A chat message may contain newlines; keep each message on one line."""
    return to_text(text).replace(u"\r", u"\\r").replace(u"\n", u"\\n")


def describe(word, args):
    """The line printed for one server message."""
    if word == "ONLINE_USERS":
        users = sorted(args.items(), key=lambda item: to_text(item[0]).lower())
        return u"ONLINE_USERS " + u" ".join(
            u"%s=%s" % (to_text(name), one_line(status)) for name, status in users)
    if word == "INVITATION":
        conv, inviter = args
        return u"INVITATION %d from %s" % (conv, to_text(inviter))
    if word == "MESSAGE":
        # A server with history adds a fourth element, {"seq": n, "ts": ms}.
        conv, sender, text = args[:3]
        return u"MESSAGE %d %s: %s" % (conv, to_text(sender), one_line(text))
    if word == "HISTORY":
        return describe_history(*args)
    if word == "UNREAD":
        unread = [u"%d: %d unread" % (int(conv), last - read)
                  for conv, (last, read) in sorted(args.items(), key=lambda i: int(i[0]))]
        return u"UNREAD " + (u", ".join(unread) or u"none")
    if word == "CAPS":
        return u"CAPS " + (u" ".join(to_text(name) for name in args) or u"(none)")
    if word == "CONVERSATIONS":
        entries = [u"%d: [%s]" % (int(conv), u", ".join(to_text(m) for m in members))
                   for conv, members in sorted(args.items(), key=lambda i: int(i[0]))]
        return u"CONVERSATIONS {" + u", ".join(entries) + u"}"
    if word == "ERROR":
        return u"ERROR " + one_line(args)
    if word in ("SIGNED_UP", "PASSWORD_CHANGED"):
        return u"%s %s" % (word, to_text(args[0]))
    # Messages this client never asks for (PRESENCE, MEMBERS) or newer
    # ones: show them plainly rather than guess.
    return u"%s %r" % (word, args)


def describe_history(conv, entries):
    """HISTORY [conv, [[seq, ts, sender, text], ...]]: a header line, then
    one line per message, oldest first, with its seq and local time."""
    lines = [u"HISTORY %d: %d message(s), oldest first" % (conv, len(entries))]
    for seq, ts, sender, text in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(ts / 1000.0))
        lines.append(u"  #%d %s %s: %s" % (seq, to_text(when), to_text(sender), one_line(text)))
    return u"\n".join(lines)


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------

class NatterClient:
    """One connection to a natter server.

    The main thread sends commands (send_command); a listener thread reads
    what the server sends and hands each message to on_message.
    """

    def __init__(self, host, port, classic=False, tls=None):
        self.address = "%s:%d" % (host, port)
        self.classic = classic
        try:
            self.sock = socket.create_connection((host, port), CONNECT_TIMEOUT)
            if tls is not None:
                # The handshake happens here, under the connect timeout;
                # the certificate must name `host`.
                self.sock = tls.wrap_socket(self.sock, server_hostname=host)
        except (socket.error, OSError, ssl.CertificateError) as err:
            raise ConnectionFailed("cannot connect to %s: %s" % (self.address, err))
        self.sock.settimeout(None)  # from now on reads wait as long as needed
        # The classic reader needs a file: the unpickler reads from it.
        self.stream = self.sock.makefile("rb")
        self.on_message = None  # set by the caller: function(word, args)
        self.on_closed = None  # set by the caller: function(reason or None)
        self.said_goodbye = False
        # Both threads send (the listener joins our own conversations), and
        # two sendall calls at once could interleave their bytes.
        self.send_lock = threading.Lock()

    # -- sending ------------------------------------------------------------

    def send_command(self, word, args=None):
        """Sends COMMAND, or COMMAND SP pickle(args) when args is not None."""
        body = word.encode("ascii")
        if args is not None:
            body += b" " + pickle.dumps(args, PICKLE_PROTOCOL)
        if not self.classic:
            # Framed: a 4-byte big-endian length, then the body.
            body = struct.pack(">I", len(body)) + body
        try:
            with self.send_lock:
                self.sock.sendall(body)
        except (socket.error, OSError) as err:
            raise ConnectionFailed("cannot send to %s: %s" % (self.address, err))

    # -- receiving ----------------------------------------------------------

    def start_listening(self):
        """Starts the thread that reads the server's messages."""
        listener = threading.Thread(target=self._listen)
        listener.daemon = True  # never keeps the program alive on its own
        listener.start()

    def _listen(self):
        try:
            while True:
                message = self._read_message()
                if message is None:
                    self.on_closed(None)
                    return
                self.on_message(*message)
        except ProtocolError as err:
            self.on_closed("undecodable data from %s: %s" % (self.address, err))
        except (socket.error, OSError) as err:
            self.on_closed("connection to %s failed: %s" % (self.address, err))

    def _read_message(self):
        """The next (word, args) from the server; None when it closed."""
        if self.classic:
            return self._read_classic()
        return self._read_framed()

    def _read_framed(self):
        header = self._read_exactly(4)
        if header is None:
            return None
        (length,) = struct.unpack(">I", header)
        if length == 0 or length > MAX_FRAME:
            raise ProtocolError("frame length %d is out of range" % length)
        body = self._read_exactly(length)
        if body is None:
            raise ProtocolError("connection closed in the middle of a frame")
        # As in the notes: the first space separates command and arguments.
        space = body.find(b" ")
        if space < 0:
            raise ProtocolError("message without arguments: %r" % body[:40])
        return self._typed(body[:space], lambda: safe_loads(body[space + 1:]))

    def _read_classic(self):
        word = self._read_word()
        if word is None:
            return None
        # The unpickler reads the stream up to the pickle's STOP opcode and
        # no further, so the next message starts right after it.
        return self._typed(word, lambda: SafeUnpickler(self.stream).load())

    def _read_word(self):
        """Reads the command word up to its space; None at end of stream."""
        word = b""
        while True:
            byte = self.stream.read(1)
            if not byte:
                if word:
                    raise ProtocolError("connection closed in the middle of a message")
                return None
            if byte == b" ":
                return word
            if not (byte.isupper() or byte == b"_") or len(word) >= 32:
                raise ProtocolError("no command word at %r" % (word + byte))
            word += byte

    def _read_exactly(self, count):
        """Exactly count bytes, or None if the stream ends first."""
        data = self.stream.read(count)
        if len(data) < count:
            return None
        return data

    def _typed(self, word, load_args):
        try:
            args = load_args()
        except ProtocolError:
            raise
        except (socket.error, OSError):
            raise
        except Exception as err:  # whatever a bad pickle makes the unpickler raise
            raise ProtocolError("bad pickle after %s: %s" % (word.decode("ascii", "replace"), err))
        return word.decode("ascii"), args

    def close(self):
        try:
            self.sock.close()
        except (socket.error, OSError):
            pass


class ConnectionFailed(Exception):
    """The server is down or the connection broke."""


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------

class Session:
    """Reads the user's lines, turns them into commands, and prints what
    the server sends; ends the program when the connection ends."""

    def __init__(self, client):
        self.client = client
        self.finished = threading.Event()  # the connection is over
        self.input_done = threading.Event()  # end of input or /quit
        self.exit_code = 0
        self.registered = threading.Event()
        self.register_error = None
        self.name = None
        self.caps = []  # the extensions the server granted (answer to CAPS)
        self.last_joined = None
        client.on_message = self.on_message
        client.on_closed = self.on_closed

    def on_message(self, word, args):
        if word == "CAPS":
            self.caps = [to_text(name) for name in args]
        elif not self.registered.is_set() and word in ("ONLINE_USERS", "ERROR"):
            # The answer to REGISTER says whether it worked: an
            # ONLINE_USERS means yes, an ERROR (name taken...) means no.
            # (UNREAD may come first: it is not the answer.)
            if word == "ERROR":
                self.register_error = one_line(args)
            self.registered.set()
        if word == "INVITATION":
            # Before the line is printed: whatever is typed after seeing it
            # goes out after the JOIN.
            self.join_if_ours(args)
        try:
            line = describe(word, args)
        except (TypeError, ValueError, AttributeError):
            line = u"%s (unexpected arguments) %r" % (word, args)
        say(line)

    def join_if_ours(self, args):
        """Joins the conversation our own /invite created: the server makes
        the inviter a member only once it joins, and whoever invites people
        means to talk to them. Plain text then goes there."""
        try:
            conv, inviter = args
        except (TypeError, ValueError):
            return
        if to_text(inviter).lower() != self.name.lower():
            return
        try:
            self.client.send_command("JOIN", [conv])
        except ConnectionFailed:
            return  # the listener reports the closed connection
        self.last_joined = conv

    def on_closed(self, reason):
        if reason is None and self.client.said_goodbye:
            self.finish(0)
            return
        say(u"error: " + (reason or u"server closed the connection"))
        self.registered.set()
        self.finish(1)

    def finish(self, code):
        if not self.finished.is_set():
            self.exit_code = code
            self.finished.set()

    def register(self, name, status, password=None, signup=False):
        self.name = name
        if signup:
            # Answered SIGNED_UP, or ERROR (taken, too short), which then
            # counts as the answer to REGISTER.
            self.client.send_command("SIGNUP", [name, password])
        # Extensions are asked for before REGISTER; the answer is CAPS.
        self.client.send_command("CAPS", ["history"])
        if password is None:
            self.client.send_command("REGISTER", [name, status])
        else:
            # An account: the third argument is its password.
            self.client.send_command("REGISTER", [name, status, password])
        self.client.start_listening()
        if not wait_for(self.registered, REPLY_TIMEOUT):
            say(u"error: no answer to REGISTER from %s" % self.client.address)
            return False
        if self.register_error is not None:
            say(u"error: could not register: " + self.register_error)
            return False
        return not self.finished.is_set()

    def read_input(self):
        """Runs in its own thread: one command per line until end of input
        or /quit. (A thread, because reading stdin blocks, and the program
        must still end when the server closes the connection.)"""
        try:
            while not self.finished.is_set():
                line = STDIN.readline()
                if not line:
                    break
                if not self.handle_line(line.decode("utf-8", "replace").strip()):
                    break
        except ConnectionFailed as err:
            say(u"error: %s" % err)
            self.finish(1)
        self.input_done.set()

    def run(self):
        """Reads input until it ends or the connection does, then says
        GOODBYE; returns the exit code."""
        reader = threading.Thread(target=self.read_input)
        reader.daemon = True  # a blocked stdin read must not keep us alive
        reader.start()
        while not (self.finished.is_set() or self.input_done.is_set()):
            self.finished.wait(0.2)
        self.goodbye()
        return self.exit_code

    def goodbye(self):
        """GOODBYE, then wait (bounded) for the server to close."""
        if not self.finished.is_set() and not self.client.said_goodbye:
            self.client.said_goodbye = True
            self.client.send_command("GOODBYE")
            # The server answers by closing; on_closed then ends the program.
            if not wait_for(self.finished, GOODBYE_TIMEOUT):
                self.finish(0)

    def handle_line(self, line):
        """Sends what one input line asks for; False for /quit."""
        if not line:
            return True
        if not line.startswith(u"/"):
            return self.send_text(self.last_joined, line)
        parts = line.split()
        command, words = parts[0], parts[1:]
        if command == u"/quit":
            return False
        if command == u"/list":
            self.client.send_command("LIST_CONVERSATIONS")
        elif command == u"/status" and words:
            self.client.send_command("STATUS", [u" ".join(words)])
        elif command == u"/invite" and words:
            self.client.send_command("INVITE", words)
        elif command in (u"/join", u"/leave") and len(words) == 1 and words[0].isdigit():
            conv = int(words[0])
            if command == u"/join":
                self.client.send_command("JOIN", [conv])
                self.last_joined = conv
            else:
                self.client.send_command("LEAVE", [conv])
        elif command == u"/send" and len(words) >= 2 and words[0].isdigit():
            text = line.split(None, 2)[2]
            return self.send_text(int(words[0]), text)
        elif command == u"/history" and not words:
            self.history(HISTORY_DEFAULT)
        elif command == u"/history" and len(words) == 1 and words[0].isdigit() and int(words[0]) > 0:
            self.history(int(words[0]))
        else:
            say(u"usage: /invite NAME..., /join ID, /leave ID, /list, "
                u"/status TEXT, /send ID TEXT, /history [N], /quit, or text to send")
        return True

    def history(self, count):
        """HISTORY [conv, 0, count]: the newest messages of the conversation
        joined last (0 means "the newest"; the server sends at most 500)."""
        if "history" not in self.caps:
            say(u"history: this server keeps no history (it runs with --ephemeral)")
        elif self.last_joined is None:
            say(u"no conversation joined yet: /join ID first")
        else:
            self.client.send_command("HISTORY", [self.last_joined, 0, count])

    def send_text(self, conv, text):
        if conv is None:
            say(u"no conversation joined yet: /join ID first")
        else:
            self.client.send_command("SEND_MESSAGE", [conv, text])
        return True


def wait_for(event, seconds):
    """event.wait(seconds) that Ctrl-C can interrupt under Python 2 too."""
    waited = 0.0
    while not event.is_set() and waited < seconds:
        event.wait(0.1)
        waited += 0.1
    return event.is_set()


def parse_args(argv):
    parser = argparse.ArgumentParser(description="A small natter chat client.")
    parser.add_argument("--host", default="127.0.0.1", help="server host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="server port (default %d)" % DEFAULT_PORT)
    parser.add_argument("--classic", action="store_true",
                        help="speak the course's classic encoding instead of framed")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, checking the server's certificate")
    parser.add_argument("--ca-file", metavar="FILE",
                        help="with --tls: trust only the CA certificates in this PEM file")
    parser.add_argument("--password", action="store_true",
                        help="sign in to your account: asks for the password (no echo)")
    parser.add_argument("--password-file", metavar="FILE",
                        help="sign in to your account with the password on the first line of FILE")
    parser.add_argument("--signup", action="store_true",
                        help="create the account first (needs --password or --password-file)")
    parser.add_argument("name", help="your username")
    parser.add_argument("status", nargs="?", default="online", help="your status (default online)")
    return parser.parse_args(argv)


def read_password(args, name):
    """The password of --password-file or --password, or None (a guest)."""
    if args.password_file:
        with io.open(args.password_file, encoding="utf-8") as source:
            password = source.readline().rstrip(u"\r\n")
        if not password:
            raise ValueError("the password file %s is empty" % args.password_file)
        return password
    if args.password or args.signup:
        return to_text(getpass.getpass("password for %s: " % name))
    return None


def main(argv):
    args = parse_args(argv)
    name, status = to_text(args.name), to_text(args.status)
    try:
        password = read_password(args, name)
    except (IOError, OSError, ValueError) as err:
        say(u"error: %s" % to_text(str(err)))
        return 1
    tls = None
    if args.tls or args.ca_file:
        # Certificate and host name checks on, as in a browser.
        tls = ssl.create_default_context(cafile=args.ca_file)
    try:
        client = NatterClient(args.host, args.port, classic=args.classic, tls=tls)
    except ConnectionFailed as err:
        say(u"error: %s" % err)
        return 1
    session = Session(client)
    try:
        if not session.register(name, status, password, args.signup):
            return 1
        return session.run()
    except ConnectionFailed as err:
        say(u"error: %s" % err)
        return 1
    except KeyboardInterrupt:
        session.goodbye()
        return session.exit_code
    finally:
        client.close()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    STDOUT.flush()
    # The input thread may still be blocked reading a line. sys.exit would
    # try to tidy stdin up underneath it (Python 3 then aborts); os._exit
    # ends the process at once, and everything printed is already flushed.
    os._exit(code)
