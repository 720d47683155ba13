"""A real Dovecot IMAP server (Debian's dovecot-imapd) for a test: a temporary config on
127.0.0.1 and a free port, IMAPS with a trustme certificate, one user from a temporary
passwd-file whose Maildir is in the test's folder. Started in the foreground and stopped by its
PID. Needs root (Dovecot's master switches to the users its config names: `default_internal_user`
dovecot, `default_login_user` dovenull, and the mail user nobody)."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.waits import HANG, wait_until

DOVECOT = "/usr/sbin/dovecot"
USER = "bounces"
PASSWORD = "imap-test-password-not-a-secret"  # noqa: S105  # a throwaway value

CONFIG = """\
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {uid}
last_valid_uid = {uid}
ssl = required
ssl_cert = <{tmp}/cert.pem
ssl_key = <{tmp}/key.pem
disable_plaintext_auth = yes
auth_mechanisms = plain
mail_location = maildir:{tmp}/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {tmp}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
"""


@dataclass(frozen=True)
class Dovecot:
    port: int
    maildir: Path  # the user's INBOX
    ca_file: Path  # trust this to reach it
    user: str = USER
    password: str = PASSWORD

    def url(self, folder: str = "INBOX") -> str:
        return f"imaps://{self.user}@127.0.0.1:{self.port}/{folder}"

    def deliver(self, name: str, data: bytes) -> None:
        """A message into new/, owned by the mail user, as a delivery agent leaves it."""
        path = self.maildir / "new" / name
        path.write_bytes(data)
        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        return False
    return True


@contextmanager
def dovecot(password: str = PASSWORD) -> Iterator[Dovecot]:
    """Dovecot serving a Maildir over IMAPS to USER with `password`; stopped (SIGTERM to its
    PID) at the end. Its folder is a short one of its own in /tmp: pytest's are too deep for
    the UNIX sockets in base_dir (108 bytes at most), and closed to the mail user."""
    if not Path(DOVECOT).is_file():
        raise FileNotFoundError(f"{DOVECOT}: install Debian's dovecot-imapd (.ci/run does)")
    with tempfile.TemporaryDirectory(prefix="dovecot-") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)  # noqa: S103  # the mail user (nobody) must reach its Maildir
        with _running(tmp, password) as server:
            yield server


@contextmanager
def _running(tmp: Path, password: str) -> Iterator[Dovecot]:
    nobody = pwd.getpwnam("nobody")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    home = tmp / "home"
    home.mkdir()
    maildir = tmp / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for path in (home, maildir, *(maildir / s for s in ("new", "cur", "tmp"))):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    passwd = f"{USER}:{{PLAIN}}{password}:{nobody.pw_uid}:{nobody.pw_gid}::{home}::\n"
    (tmp / "passwd").write_text(passwd, encoding="utf-8")
    port = _free_port()
    config = tmp / "dovecot.conf"
    config.write_text(CONFIG.format(tmp=tmp, port=port, uid=nobody.pw_uid))
    server = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(config)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: _listening(port), f"dovecot listening on 127.0.0.1:{port}",
                   alive=lambda: server.poll() is None, stall=HANG)  # fmt: skip
        yield Dovecot(port, maildir, tmp / "ca.pem", password=password)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=HANG)
        if server.stderr:
            server.stderr.close()
