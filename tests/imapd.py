"""A small IMAP4rev1 server over TLS on 127.0.0.1 (port 0) for what Dovecot cannot show: a
server that keeps no keywords (PERMANENTFLAGS without \\*, as Microsoft's IMAP answers). It
speaks only what `newsletter bounces --imap` says (CAPABILITY, LOGIN, SELECT, UID SEARCH/FETCH/
STORE, LOGOUT) and refuses to store a flag it does not keep, as RFC 3501 allows."""

from __future__ import annotations

import re
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trustme

KEPT = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")  # no \* : no keywords


@dataclass
class Imapd:
    port: int
    ca_file: Path
    user: str = "bounces"
    password: str = "imapd-test-password"  # noqa: S105  # a throwaway value
    messages: dict[int, bytes] = field(default_factory=dict)
    flags: dict[int, set[str]] = field(default_factory=dict)

    def url(self) -> str:
        return f"imaps://{self.user}@127.0.0.1:{self.port}/INBOX"

    def deliver(self, data: bytes) -> None:
        uid = len(self.messages) + 1
        self.messages[uid], self.flags[uid] = data, set()


class _Session(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.say("* OK IMAP4rev1 ready")
        while line := self.rfile.readline():
            tag, _, rest = line.decode().rstrip("\r\n").partition(" ")
            command, _, args = rest.partition(" ")
            if not self.answer(tag, command.upper(), args):
                return

    def say(self, text: str, data: bytes = b"") -> None:
        self.wfile.write(text.encode() + (data + b")" if data else b"") + b"\r\n")

    def answer(self, tag: str, command: str, args: str) -> bool:
        box = self.server.box
        if command == "LOGOUT":
            self.say("* BYE")
            self.say(f"{tag} OK LOGOUT done")
            return False
        if command == "CAPABILITY":
            self.say("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
        elif command == "LOGIN":
            if args.split(" ", 1) != [box.user, f'"{box.password}"']:
                self.say(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.")
                return True
        elif command == "SELECT":
            self.say(f"* {len(box.messages)} EXISTS")
            self.say(f"* FLAGS ({' '.join(KEPT)})")
            self.say(f"* OK [PERMANENTFLAGS ({' '.join(KEPT)})] Limited")
        elif command == "UID":
            return self.uid(tag, args)
        self.say(f"{tag} OK {command} done")
        return True

    def uid(self, tag: str, args: str) -> bool:
        box = self.server.box
        command, _, rest = args.partition(" ")
        if command.upper() == "SEARCH":  # a sequence set, then UNSEEN or UNKEYWORD k
            numbers, _, criteria = rest.partition(" ")
            first, _, last = numbers.partition(":")
            found = [u for u in box.flags if int(first) <= u <= int(last or first)]
            unseen = criteria.upper() == "UNSEEN"
            keyword = criteria.split(" ")[-1] if criteria.upper().startswith("UNKEYWORD") else ""
            found = [u for u in found if not (unseen and "\\Seen" in box.flags[u])]
            found = [u for u in found if keyword not in box.flags[u]]
            self.say("* SEARCH " + " ".join(map(str, found)))
        elif command.upper() == "FETCH":
            uid = int(rest.split(" ")[0])
            data = box.messages[uid]
            self.say(f"* {uid} FETCH (UID {uid} BODY[] {{{len(data)}}}\r\n", data)
        elif command.upper() == "STORE":
            uid, wanted = int(rest.split(" ")[0]), re.findall(r"[\\\w]+", rest.partition("(")[2])
            if any(f not in KEPT for f in wanted):
                self.say(f"{tag} NO [CANNOT] Keywords are not supported")
                return True
            box.flags[uid].update(wanted)
        self.say(f"{tag} OK UID {command} done")
        return True


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    box: Imapd


@contextmanager
def imapd(tmp: Path) -> Iterator[Imapd]:
    """The server, with a trustme certificate whose CA is in `tmp`; shut down at the end."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp / "imapd-ca.pem"))
    server = _Server(("127.0.0.1", 0), _Session)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.box = Imapd(server.server_address[1], tmp / "imapd-ca.pem")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.box
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
