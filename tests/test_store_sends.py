"""Several `newsletter send` processes on one send in a PostgreSQL store (issue 12): claims,
leases, a sender killed, an unsubscribe mid-send, the store going down, per-sender shares.

Every wait is on the server's progress or on a process ending (tests/waits.py), never on a
clock; the lease is short here so that a killed sender's claims come back soon.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter import Newsletter
from newsletter.config import load_config
from newsletter.pg.connection import connect
from newsletter.pg.lists import PgStore
from newsletter.pg.migrations import migrate
from tests.pgcluster import Cluster
from tests.send_helpers import ISSUE, command, env_for, make_folder, run, smtp_env
from tests.smtpd import SmtpServer
from tests.waits import STALL

K = 4  # connections per sender
LEASE = "10"  # seconds: short, yet long enough that a busy machine never lets a live one lapse


class Senders:
    """`newsletter send ISSUE --yes` processes on one folder and store, each logged."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        log = self.folder.parent / f"sender-{len(self.procs)}.txt"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                command(self.folder, "send", ISSUE, "--yes", *extra),
                cwd=self.folder,
                env=env_for(self.env),
                stdin=subprocess.DEVNULL,
                stdout=stderr,  # the report too: one log per sender
                stderr=stderr,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def run(self, count: int, server: SmtpServer) -> list[int]:
        """Start `count` senders at once; their exit codes once all ended (killed if the wait
        failed)."""
        try:
            for _ in range(count):
                self.start()
            return self.wait_all(server)
        finally:
            self.kill_all()

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def wait_all(self, server: SmtpServer) -> list[int]:
        """Every sender's exit code, once all ended; fail when nothing moved for STALL s
        (no message arrived and no sender ended)."""
        last, since = (len(server.messages), self.alive_count()), time.monotonic()
        while self.alive():
            time.sleep(0.05)
            now = (len(server.messages), self.alive_count())
            if now != last:
                last, since = now, time.monotonic()
            if time.monotonic() - since > STALL + float(LEASE):
                pytest.fail(f"the senders stalled:\n{self.stderr()}")
        return [p.returncode for p in self.procs]

    def alive_count(self) -> int:
        return sum(p.poll() is None for p in self.procs)

    def stderr(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()


def wait_for_messages(server: SmtpServer, count: int, senders: Senders) -> None:
    """Until the server has `count` messages; fail if the senders all ended first, or no
    message arrived for STALL s."""
    last, since = len(server.messages), time.monotonic()
    while not server.wait_for_messages(count, timeout=0.05):
        if not senders.alive():
            pytest.fail(f"the senders ended before {count} messages:\n{senders.stderr()}")
        if len(server.messages) != last:
            last, since = len(server.messages), time.monotonic()
        if time.monotonic() - since > STALL:
            pytest.fail(f"no message for {STALL:g} s:\n{senders.stderr()}")


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer(keep_data=False, idle_timeout=120.0) as running:
        yield running


def into_store(folder: Path, url: str) -> None:
    """The folder's list imported into the migrated store at `url` (as `news`): with a store,
    a send selects from the store's lists, never the folder's subscribers/."""
    with connect(url) as conn:
        migrate(conn, "test")
    source = folder / "subscribers" / "news.csv"
    done = run(folder, "subscribers", "import", str(source), "--into", "news",
               env={"NEWSLETTER_STORE_URL": url})  # fmt: skip
    assert done.returncode == 0, done.stderr


def store_folder(tmp_path: Path, url: str, people: int, server: SmtpServer) -> Senders:
    folder = make_folder(tmp_path, people)
    into_store(folder, url)
    env = smtp_env(
        server.port,
        NEWSLETTER_STORE_URL=url,
        NEWSLETTER_STORE_LEASE=LEASE,
        NEWSLETTER_SMTP_CONNECTIONS=str(K),
    )
    return Senders(folder, env)


def status(senders: Senders) -> dict[str, object]:
    shown = run(senders.folder, "status", ISSUE, "--json", env=senders.env)
    assert shown.returncode == 0, shown.stderr
    doc: dict[str, object] = json.loads(shown.stdout)
    return doc


def test_three_senders_one_killed_and_started_again(
    tmp_path: Path, pg_url: str, server: SmtpServer
) -> None:
    """Three senders on 20,000 readers, one SIGKILLed mid-send and started again: nobody
    gets two copies, at most K (its connections) are unknown, every other reader got exactly
    one, and `status` counts what the server received, shared among the senders."""
    people = 20_000
    senders = store_folder(tmp_path, pg_url, people, server)
    try:
        for _ in range(3):
            senders.start()
        wait_for_messages(server, 3000, senders)
        victim = senders.procs[0]
        assert victim.poll() is None, senders.stderr()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        senders.start()
        codes = senders.wait_all(server)
    finally:
        senders.kill_all()
    assert codes[1:] == [0, 0, 0], senders.stderr()
    delivered = server.delivered()
    doc = status(senders)
    counts = doc["counts"]
    assert isinstance(counts, dict)
    unknown = set(doc["unknown"])  # type: ignore[call-overload]  # a list of addresses
    assert max(delivered.values()) == 1  # nobody twice
    everyone = {f"reader{i}@example.org" for i in range(people)}
    assert everyone - set(delivered) <= unknown  # not received: only those in doubt
    assert len(unknown) <= K
    assert counts["sent"] + len(unknown & set(delivered)) == len(server.messages)
    assert counts["pending"] == counts["deferred"] == counts["failed"] == 0
    workers = doc["workers"]
    assert isinstance(workers, list)
    assert len(workers) == 4  # three, and the one started again: a new process, a new id
    assert sum(w["sent"] for w in workers) == counts["sent"]
    assert len({w["id"] for w in workers}) == 4


def test_a_killed_senders_claims_are_sent_by_the_others(
    tmp_path: Path, pg_url: str, server: SmtpServer
) -> None:
    """One of two senders killed and not started again: the other waits for its lease to
    expire, takes back what it had claimed and not started, sends it, and exits 0; those in
    doubt go again only with --resend-unknown, as on one machine."""
    people = 3000
    senders = store_folder(tmp_path, pg_url, people, server)
    try:
        senders.start()
        senders.start()
        wait_for_messages(server, 400, senders)
        senders.procs[0].send_signal(signal.SIGKILL)
        senders.procs[0].wait()
        codes = senders.wait_all(server)
    finally:
        senders.kill_all()
    assert codes[1] == 0, senders.stderr()
    doc = status(senders)
    unknown = set(doc["unknown"])  # type: ignore[call-overload]  # a list of addresses
    delivered = server.delivered()
    assert max(delivered.values()) == 1
    everyone = {f"reader{i}@example.org" for i in range(people)}
    assert everyone - set(delivered) <= unknown
    assert len(unknown) <= K
    assert doc["counts"]["pending"] == 0  # type: ignore[index]  # a dict
    again = run(senders.folder, "send", ISSUE, "--resend-unknown", "--yes", env=senders.env)
    assert again.returncode == 0, again.stderr
    assert status(senders)["counts"]["sent"] == people  # type: ignore[index]  # a dict
    assert set(server.delivered()) == everyone


def test_an_unsubscribe_mid_send_is_honoured_for_what_is_not_claimed(
    tmp_path: Path, pg_url: str, server: SmtpServer
) -> None:
    """Readers near the end of the list unsubscribe while three senders run: none of them
    is mailed, and status counts them as left out."""
    people = 4000
    senders = store_folder(tmp_path, pg_url, people, server)
    leaving = [f"reader{i}@example.org" for i in range(people - 50, people, 5)]
    store = PgStore(pg_url, senders.folder)  # the lists the senders select from
    try:
        for _ in range(3):
            senders.start()
        wait_for_messages(server, 300, senders)  # claimed so far: far from the list's end
        for email in leaving:  # committed (durable) when set_status returns
            assert store.set_status(email, "unsubscribed").changed
        codes = senders.wait_all(server)
    finally:
        senders.kill_all()
        store.close()
    assert codes == [0, 0, 0], senders.stderr()
    delivered = server.delivered()
    assert not set(leaving) & set(delivered)
    assert len(delivered) == people - len(leaving)
    doc = status(senders)
    assert doc["counts"]["left_out"] == len(leaving)  # type: ignore[index]  # a dict


def test_the_store_going_down_stops_the_senders_and_a_resume_completes(
    tmp_path: Path, pg_cluster: Cluster, server: SmtpServer
) -> None:
    """The store stops mid-send: each sender ends with exit 6 and one line naming the store;
    once it is back, a resume sends the rest: nobody twice, nobody missing but those in
    doubt (at most K per sender)."""
    people = 4000
    url = pg_cluster.url(pg_cluster.create_database())
    senders = store_folder(tmp_path, url, people, server)
    try:
        senders.start()
        senders.start()
        wait_for_messages(server, 500, senders)
        pg_cluster.stop("immediate")
        try:
            codes = senders.wait_all(server)
        finally:
            pg_cluster.start()
        assert codes == [6, 6], senders.stderr()
        for log in senders.logs:
            text = log.read_text()
            assert "error: the store at " in text and "run the command again" in text, text
            assert "Traceback" not in text
        senders.start()
        assert senders.wait_all(server)[-1] == 0, senders.stderr()
    finally:
        senders.kill_all()
    delivered = server.delivered()
    doc = status(senders)
    unknown = set(doc["unknown"])  # type: ignore[call-overload]  # a list of addresses
    assert max(delivered.values()) == 1
    everyone = {f"reader{i}@example.org" for i in range(people)}
    assert everyone - set(delivered) <= unknown
    assert len(unknown) <= 2 * K
    assert doc["counts"]["pending"] == 0  # type: ignore[index]  # a dict
    assert Counter(doc["counts"]).total() >= people  # type: ignore[arg-type]  # a dict


def test_the_hourly_limit_holds_for_all_senders_together(
    tmp_path: Path, pg_url: str, server: SmtpServer
) -> None:
    """[smtp] hourly_limit across three senders: the server gets exactly that many messages,
    and each sender pauses (exit 3) instead of waiting an hour."""
    senders = store_folder(tmp_path, pg_url, 300, server)
    senders.env["NEWSLETTER_SMTP_HOURLY_LIMIT"] = "40"
    codes = senders.run(3, server)
    assert codes == [3, 3, 3], senders.stderr()
    assert len(server.messages) == 40
    assert "paused: a sending limit allows the next message in" in senders.stderr()
    doc = status(senders)
    assert doc["counts"]["sent"] == 40  # type: ignore[index]  # a dict


def test_status_shows_each_senders_share(tmp_path: Path, pg_url: str, server: SmtpServer) -> None:
    """`status` after two senders: the totals, then one line per sender with its share; and
    the list of every send reads the store."""
    senders = store_folder(tmp_path, pg_url, 600, server)
    codes = senders.run(2, server)
    assert codes == [0, 0], senders.stderr()
    shown = run(senders.folder, "status", ISSUE, env=senders.env)
    assert shown.returncode == 0, shown.stderr
    assert "sent 600, failed 0, deferred 0, unknown 0, left out 0, pending 0" in shown.stdout
    lines = [line for line in shown.stdout.splitlines() if line.startswith("  sender ")]
    shares = [int(line.split("sent ")[1].split(",")[0]) for line in lines]
    assert sum(shares) == 600 and len(shares) in (1, 2)  # the second may find nothing left
    listed = run(senders.folder, "status", "--json", env=senders.env)  # every send, no issue
    assert listed.returncode == 0, listed.stderr
    [one] = json.loads(listed.stdout)
    assert one["issue"] == "2021-09-cohes3ion" and one["counts"]["sent"] == 600


def test_a_send_refuses_a_store_at_another_schema_version(
    tmp_path: Path, pg_url: str, server: SmtpServer
) -> None:
    """A store not migrated (or migrated by a newer version): the send refuses before
    anything is sent, saying to run `newsletter store migrate`."""
    folder = make_folder(tmp_path, 3)
    env = smtp_env(server.port, NEWSLETTER_STORE_URL=pg_url)
    done = run(folder, "send", ISSUE, "--yes", env=env)
    assert done.returncode == 1
    assert "run `newsletter store migrate`" in done.stderr
    assert server.messages == []


def test_send_times_follow_every_senders_grants() -> None:
    """The shared rate: new times are spaced from the last one any sender was granted, and
    an hourly limit counts every sender's."""
    from newsletter.limits import Limits, grants

    times, _ = grants(Limits(rate=10), 100.0, [99.95], 3)
    assert times == pytest.approx([100.05, 100.15, 100.25])
    hourly = Limits(hourly=5, max_wait=60.0)
    times, wait = grants(hourly, 100.0, [10.0, 20.0, 30.0, 40.0], 3)
    assert times == [100.0]  # one left in the hour; the next only at 10 + 3600
    assert wait == pytest.approx(3510.0)


def test_a_sender_cut_off_past_its_lease_stops_without_sending_what_was_taken_over(
    tmp_path: Path, pg_url: str, server: SmtpServer
) -> None:
    """A sender frozen (SIGSTOP) longer than its lease: the other takes its claims and ends;
    woken, the frozen one sends none of them, says why it stops, and nobody has two copies."""
    people = 3000
    senders = store_folder(tmp_path, pg_url, people, server)
    try:
        frozen, other = senders.start(), senders.start()
        wait_for_messages(server, 400, senders)
        frozen.send_signal(signal.SIGSTOP)
        # its claims hold the send open until its lease expires: `store check` shows it
        checked = run(senders.folder, "store", "check", "--json", env=senders.env)
        assert checked.returncode == 0, checked.stderr
        [running] = json.loads(checked.stdout)["running"]
        assert running["workers"] >= 1 and running["counts"]["sent"] >= 400
        last, since = len(server.messages), time.monotonic()
        while other.poll() is None:  # it waits out the frozen one's lease, then sends the rest
            time.sleep(0.05)
            if len(server.messages) != last:
                last, since = len(server.messages), time.monotonic()
            if time.monotonic() - since > STALL + float(LEASE):
                pytest.fail(f"the other sender stalled:\n{senders.stderr()}")
        frozen.send_signal(signal.SIGCONT)
        codes = senders.wait_all(server)
    finally:
        senders.kill_all()
    assert codes[1] == 0, senders.stderr()
    # it stopped, saying why: it noticed, or the server had ended its session meanwhile (a
    # session idle in a transaction for longer than the lease), and it cannot record any more
    said = senders.logs[0].read_text()
    assert "this sender's lease expired" in said or "error: the store at" in said, said
    assert "Traceback" not in said
    delivered = server.delivered()
    assert max(delivered.values()) == 1
    doc = status(senders)
    unknown = set(doc["unknown"])  # type: ignore[call-overload]  # a list of addresses
    everyone = {f"reader{i}@example.org" for i in range(people)}
    assert everyone - set(delivered) <= unknown
    assert len(unknown) <= K


def test_a_second_folder_waits_for_the_first_plan_and_joins_its_send(
    tmp_path: Path, pg_url: str
) -> None:
    """Two copies of the newsletter in two folders (two machines): the second plan waits
    while the first holds its snapshot uncommitted, then joins the same send (named by slug,
    content and destination, not by folder); together they write each reader once."""
    import shutil
    import threading

    people = 30
    first = make_folder(tmp_path / "a", people)
    second = tmp_path / "b" / "letter"
    shutil.copytree(first, second)
    into_store(first, pg_url)
    env = {"NEWSLETTER_STORE_URL": pg_url}
    notes: list[str] = []
    waiting = threading.Event()

    def note(text: str) -> None:
        notes.append(text)
        if text.startswith("waiting for another sender's plan"):
            waiting.set()

    with (  # the store's lists, as the API would open them, closed at the end
        contextlib.closing(PgStore(pg_url, first)) as lists_one,
        contextlib.closing(PgStore(pg_url, second)) as lists_two,
    ):
        one = Newsletter(load_config(first, environ=env), store=lists_one)
        two = Newsletter(load_config(second, environ=env), notify=note, store=lists_two)
        plan_one = one.plan(first / ISSUE)
        joined: list[object] = []
        thread = threading.Thread(target=lambda: joined.append(two.plan(second / ISSUE)))
        thread.start()
        try:
            assert waiting.wait(60), notes  # blocked on the first plan's uncommitted send
            report_one = one.send(plan_one)
        finally:
            thread.join(60)
        assert not thread.is_alive()
        [plan_two] = joined
        assert plan_two.recipients == people  # type: ignore[attr-defined]  # a Plan
        report_two = two.send(plan_two)  # type: ignore[arg-type]  # a Plan
        written = [
            path
            for folder in (first, second)
            for path in (folder / "outbox").rglob("*")
            if path.is_file()
        ]
        assert report_one.counts.sent == report_two.counts.sent == people
        assert len(written) == people
        assert len(one.sends.summaries()) == 1


def test_the_rate_is_shared_by_all_senders(tmp_path: Path, pg_url: str, server: SmtpServer) -> None:
    """[smtp] rate across three senders: the send times the store granted to all of them
    together (on its own clock) are spaced by at least 1/rate, one for each message."""
    people, rate = 600, 200  # more than one batch of claims (256) each
    senders = store_folder(tmp_path, pg_url, people, server)
    senders.env["NEWSLETTER_SMTP_RATE"] = str(rate)
    codes = senders.run(3, server)
    assert codes == [0, 0, 0], senders.stderr()
    assert len(server.messages) == people
    with connect(pg_url) as conn:
        rows = conn.execute("SELECT at, worker FROM send_grants ORDER BY at").fetchall()
    times = [float(at) for at, _ in rows]
    assert len(times) >= people
    assert len({worker for _, worker in rows}) >= 2  # shared, not one sender's
    assert min(b - a for a, b in itertools.pairwise(times)) >= 1 / rate - 1e-6


@pytest.mark.parametrize("on_change", ["continue", "restart"])
def test_the_issue_changed_while_another_sender_works_is_refused(
    pg_url: str, on_change: str
) -> None:
    """A sender is sending the earlier version (its lease live): `--on-change` from another
    machine is refused, naming it, rather than a second send beside it (restart: readers it
    has not reached yet mailed twice) or a digest it never sends (continue); once it is
    done, the same command goes ahead."""
    from newsletter.errors import SendersAtWork
    from newsletter.pg.sends import PgSends
    from newsletter.store import Entry

    with connect(pg_url) as conn:
        migrate(conn, "test")
    first, _ = PgSends(pg_url, lease=60.0).open("issue-1", "smtp://127.0.0.1:25", "v1")
    first.add(Entry(f"r{i}@example.org", f"r{i}@example.org") for i in range(10))
    first.save()
    [row] = first.pending(0, 1)
    assert first.start(row.id)
    first.sent(row.id, 250, "ok")
    first.commit()
    with pytest.raises(SendersAtWork) as caught:
        PgSends(pg_url, lease=60.0).open(
            "issue-1", "smtp://127.0.0.1:25", "v2", on_change=on_change
        )
    assert caught.value.working == 1
    first.close()  # done: its lease ends
    second, note = PgSends(pg_url, lease=60.0).open(
        "issue-1", "smtp://127.0.0.1:25", "v2", on_change=on_change
    )
    second.close()
    assert note


def test_a_claim_takes_one_batch_whatever_the_plan_of_the_store(pg_url: str) -> None:
    """A claim of the second send of a store, whose statistics know only the first (as after
    every snapshot, before autovacuum looks): the sender gets `limit` rows, the others stay
    free for the other senders (a nested-loop plan ran the locking subquery once per row,
    claiming the whole list at once in quadratic time)."""
    from newsletter.pg.sends import PgSends
    from newsletter.store import Entry

    with connect(pg_url) as conn:
        migrate(conn, "test")
    for slug in ("issue-1", "issue-2"):
        ledger, _ = PgSends(pg_url, lease=60.0).open(slug, "smtp://127.0.0.1:25", "d")
        ledger.add(Entry(f"r{i}@example.org", f"r{i}@example.org") for i in range(2000))
        ledger.save()
        if slug == "issue-1":
            ledger.close()
            with connect(pg_url, autocommit=True) as conn:
                conn.execute("ANALYZE send_recipients")
    with contextlib.closing(ledger):
        claimed = ledger.pending(0, 5)
        assert [row.id for row in claimed] == [1, 2, 3, 4, 5]
        with connect(pg_url, autocommit=True) as conn:
            found = conn.execute(
                "SELECT count(*) FROM send_recipients WHERE send_id = %s AND worker IS NOT NULL",
                (ledger.send_id,),
            ).fetchone()
        assert found is not None and found[0] == 5
