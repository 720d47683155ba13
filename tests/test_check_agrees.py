"""`check` and `send` agree: whatever building or sending a message refuses, `check` reports as
an error at file:line, and bad issue input never ends in a traceback (exit 1, one line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compose_helpers import MINIMAL_CONFIG, run, write

HEAD = 'title = "News"\nsubject = "News"\npreheader = "p"\ndate = 2024-01-02\n'
TEXT = '[[blocks]]\nkind = "text"\nbody = "Hello"\n'
ARTICLE = '[[blocks]]\nkind = "article"\nheading = "H"\nbody = "b"\n'
TWO_IMAGES = (
    '{ src = "https://img.org/a.png", alt = "A", width = 200 }, '
    '{ src = "https://img.org/b.png", alt = "B", width = 200 }'
)


def _folder(tmp_path: Path, issue: str, config: str = MINIMAL_CONFIG) -> Path:
    write(tmp_path / "newsletter.toml", config)
    write(tmp_path / "subscribers" / "subscribers.csv", "email,name\nann@example.com,Ann\n")
    path = tmp_path / "issues" / "x.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(issue, encoding="utf-8")
    return path


def _refused(result_output: str, exit_code: int, where: str, needle: str) -> None:
    assert exit_code == 1, result_output
    assert "Traceback" not in result_output
    lines = [line for line in result_output.splitlines() if where in line]
    assert len(lines) == 1, result_output
    assert needle in lines[0], result_output


# (issue text, "line: field", what the error says)
REFUSED_BY_SEND = {
    "LF in subject": (HEAD.replace('"News"\npre', '"a\\nb"\npre') + TEXT, "2: subject", "U+000A"),
    "CR in subject": (HEAD.replace('"News"\npre', '"a\\rb"\npre') + TEXT, "2: subject", "U+000D"),
    "tab in subject": (HEAD.replace('"News"\npre', '"a\\tb"\npre') + TEXT, "2: subject", "U+0009"),
    "U+2028 in subject": (
        HEAD.replace('"News"\npre', '"a\\u2028b"\npre') + TEXT,
        "2: subject",
        "U+2028",
    ),
    "LF from a template in subject": (
        HEAD.replace('"News"\npre', """'a{{ "\\n" }}b'\npre""") + TEXT,
        "2: subject",
        "U+000A",
    ),
    "LF in a merge field's default in subject": (
        HEAD.replace('"News"\npre', """'a{{ subscriber.name | default("x\\ny") }}'\npre""") + TEXT,
        "2: subject",
        "U+000A",
    ),
    "U+2028 in a merge field's default in subject": (
        HEAD.replace('"News"\npre', """'a{{ subscriber.city | default("x\u2028y") }}'\npre""")
        + TEXT,
        "2: subject",
        "U+2028",
    ),
    "NUL in subject": (HEAD.replace('"News"\npre', '"a\\u0000b"\npre') + TEXT, "2: subject", ""),
    "url without host": (
        HEAD + ARTICLE + 'cta = { text = "x", url = "https://" }\n',
        "9: blocks[0].cta.url",
        "has no host",
    ),
    "url with an open bracket": (
        HEAD + ARTICLE + 'cta = { text = "x", url = "https://[::1" }\n',
        "9: blocks[0].cta.url",
        "cannot be parsed as a URL",
    ),
    "url with a bad port": (
        HEAD + ARTICLE + 'cta = { text = "x", url = "https://a.org:99999/" }\n',
        "9: blocks[0].cta.url",
        "cannot be parsed as a URL",
    ),
    "url with a space in its host": (
        HEAD + ARTICLE + 'cta = { text = "x", url = "https://exa mple.org/" }\n',
        "9: blocks[0].cta.url",
        "is not a host name",
    ),
    "url with a blank in its path": (
        HEAD + ARTICLE + 'cta = { text = "x", url = "https://a.org/a\u00a0b" }\n',
        "9: blocks[0].cta.url",
        "%20",
    ),
    "url with port 0": (
        HEAD + ARTICLE + 'cta = { text = "x", url = "https://a.org:0/" }\n',
        "9: blocks[0].cta.url",
        "cannot be parsed as a URL",
    ),
    "url with a space in its host in Markdown": (
        HEAD + TEXT.replace("Hello", "see [here](<https://exa mple.org/x>)"),
        "7: blocks[0].body",
        "is not a host name",
    ),
    "image src with a space in its host": (
        HEAD + ARTICLE + 'image = { src = "https://i mg.org/a.png", alt = "A", width = 100 }\n',
        "9: blocks[0].image.src",
        "https://",
    ),
    "javascript: link in Markdown": (
        HEAD + TEXT.replace("Hello", "see [here](javascript:alert(1))"),
        "7: blocks[0].body",
        "is not an https:// or mailto: link",
    ),
    "data: image in Markdown": (
        HEAD + TEXT.replace("Hello", "![a chart](data:image/png;base64,AAAA)"),
        "7: blocks[0].body",
        "is not an https:// or mailto: link",
    ),
    "url without host in Markdown": (
        HEAD + TEXT.replace("Hello", "see [here](https:///x)"),
        "7: blocks[0].body",
        "link 'here'",
    ),
    "image src with an open bracket": (
        HEAD + ARTICLE + 'image = { src = "https://[::1/a.png", alt = "A", width = 100 }\n',
        "9: blocks[0].image.src",
        "https://",
    ),
    "image href without host": (
        HEAD + ARTICLE + 'image = { src = "https://i.org/a.png", alt = "A", width = 100, '
        'href = "https://" }\n',
        "9: blocks[0].image.href",
        "has no host",
    ),
    "empty items": (
        HEAD + '[[blocks]]\nkind = "links"\nheading = "H"\nitems = []\n',
        "8: blocks[0].items",
        "empty",
    ),
    "empty images": (
        HEAD + '[[blocks]]\nkind = "images"\nimages = []\n',
        "7: blocks[0].images",
        "empty",
    ),
    "fewer captions than images": (
        HEAD + f'[[blocks]]\nkind = "images"\nimages = [{TWO_IMAGES}]\ncaptions = ["one"]\n',
        "8: blocks[0].captions",
        "1 caption(s) for 2 image(s)",
    ),
    "more captions than images": (
        HEAD + f'[[blocks]]\nkind = "images"\nimages = [{TWO_IMAGES}]\n'
        'captions = ["a", "b", "c"]\n',
        "8: blocks[0].captions",
        "3 caption(s) for 2 image(s)",
    ),
    "empty body": (HEAD + TEXT.replace('"Hello"', '""'), "7: blocks[0].body", "empty"),
    "blank body": (HEAD + TEXT.replace('"Hello"', '"  \\n "'), "7: blocks[0].body", "empty"),
    "blank heading": (
        HEAD + ARTICLE.replace('heading = "H"', 'heading = " "'),
        "7: blocks[0].heading",
        "empty",
    ),
    "empty link text": (
        HEAD + '[[blocks]]\nkind = "links"\nheading = "H"\n'
        '[[blocks.items]]\ntext = ""\nurl = "https://a.org"\n',
        "9: blocks[0].items[0].text",
        "empty",
    ),
    "no blocks": (HEAD + "blocks = []\n", "5: blocks", "empty"),
}


@pytest.mark.parametrize("command", ["check", "send"])
@pytest.mark.parametrize(
    ("issue", "where", "needle"), REFUSED_BY_SEND.values(), ids=REFUSED_BY_SEND.keys()
)
def test_check_reports_what_send_refuses(
    tmp_path: Path, monkeypatch, command: str, issue: str, where: str, needle: str
) -> None:
    """Each input is one error at file:line: field in `check`, and `send` refuses it the same
    way before writing anything."""
    path = _folder(tmp_path, issue)
    monkeypatch.chdir(tmp_path)
    result = run(command, path, *(["--yes"] if command == "send" else []))
    _refused(result.output, result.exit_code, f"{path}:{where}: ", needle)
    assert not (tmp_path / "outbox").exists()
    assert not (tmp_path / ".newsletter" / "sends").exists()


@pytest.mark.parametrize(
    "base_url", ["https://[::1", "https://", "https://a.org:x", "https:///path", "news.example.org"]
)
def test_unusable_base_url_is_a_config_error(tmp_path: Path, monkeypatch, base_url: str) -> None:
    """A base_url that cannot be parsed, or has no host, is newsletter.toml:line: key."""
    config = MINIMAL_CONFIG.replace("https://news.example.org", base_url)
    path = _folder(tmp_path, HEAD + TEXT, config)
    monkeypatch.chdir(tmp_path)
    result = run("check", path)
    where = f"{tmp_path / 'newsletter.toml'}:5: newsletter.base_url: "
    _refused(result.output, result.exit_code, where, "must be an https:// URL")


def test_missing_base_url_is_a_check_error(tmp_path: Path, monkeypatch) -> None:
    """Without base_url no message can be built (no unsubscribe link): `check` says so."""
    config = MINIMAL_CONFIG.replace('base_url = "https://news.example.org"\n', "")
    path = _folder(tmp_path, HEAD + TEXT, config)
    monkeypatch.chdir(tmp_path)
    result = run("check", path)
    where = f"{tmp_path / 'newsletter.toml'}: newsletter.base_url: "
    _refused(result.output, result.exit_code, where, "missing")


@pytest.mark.parametrize("title", ["a\nb", "a\rb", "a\tb", "a\u2028b", "a\x85b"])
def test_new_refuses_a_title_that_is_not_one_line(tmp_path: Path, monkeypatch, title: str) -> None:
    """`new` writes no issue whose subject `send` would refuse."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    monkeypatch.chdir(tmp_path)
    result = run("new", title)
    assert result.exit_code == 1
    assert "title contains control character" in result.output
    assert not list(tmp_path.glob("issues/*.toml"))


def test_bad_data_first_in_line_does_not_stop_the_send(tmp_path: Path, monkeypatch) -> None:
    """The plan's size estimate uses a neutral sample: a first recipient whose merge value
    cannot go into the subject fails alone; the others are sent."""
    issue = HEAD.replace(
        '"News"\npre', """'News for {{ subscriber.city | default("you") }}'\npre"""
    )
    path = _folder(tmp_path, issue + TEXT)
    write(
        tmp_path / "subscribers" / "subscribers.csv",
        'email,name,city\nbob@example.com,Bob,"Ber\nlin"\nann@example.com,Ann,Paris\n',
    )
    monkeypatch.chdir(tmp_path)
    result = run("send", path, "--yes")
    assert "Traceback" not in result.output
    assert "writing: 2 message(s)" in result.output
    assert "sent 1, failed 1" in result.output
    assert "failed: bob@example.com" in result.output
    [message] = (tmp_path / "outbox" / "new").iterdir()
    assert b"Subject: News for Paris" in message.read_bytes()


DKIM_HALF_SET = {
    "no selector": ('dkim_domain = "example.org"\ndkim_key_file = "k.pem"\n', "dkim_selector"),
    "no key file": ('dkim_domain = "example.org"\ndkim_selector = "s1"\n', "dkim_key_file"),
    "key file missing": (
        'dkim_domain = "example.org"\ndkim_selector = "s1"\ndkim_key_file = "none.pem"\n',
        "dkim_key_file",
    ),
}


@pytest.mark.parametrize("command", ["check", "send"])
@pytest.mark.parametrize(("settings", "key"), DKIM_HALF_SET.values(), ids=DKIM_HALF_SET.keys())
def test_dkim_settings_send_refuses_are_check_errors(
    tmp_path: Path, monkeypatch, command: str, settings: str, key: str
) -> None:
    """DKIM settings that stop `send` are a check error naming the key; send writes nothing."""
    path = _folder(tmp_path, HEAD + TEXT, MINIMAL_CONFIG + settings)
    monkeypatch.chdir(tmp_path)
    result = run(command, path, *(["--yes"] if command == "send" else []))
    where = f"{tmp_path / 'newsletter.toml'}: newsletter.{key}: "
    _refused(result.output, result.exit_code, where, "")
    assert not (tmp_path / ".newsletter" / "sends").exists()


@pytest.mark.parametrize(
    ("line", "key", "needle"),
    [
        ('name = "Test\\nnews"', "name", "U+000A"),
        ('name = "Test\\u0000news"', "name", "U+0000"),
        ('list_id = "news example"', "list_id", "is not a list id"),
        ('list_id = "bücher.example.org"', "list_id", "is not a list id"),
    ],
)
def test_header_settings_send_refuses_are_config_errors(
    tmp_path: Path, monkeypatch, line: str, key: str, needle: str
) -> None:
    """A newsletter name or list id that no header can carry is newsletter.toml:line: key."""
    config = (
        MINIMAL_CONFIG.replace('name = "Test news"', line)
        if key == "name"
        else (MINIMAL_CONFIG + line + "\n")
    )
    path = _folder(tmp_path, HEAD + TEXT, config)
    monkeypatch.chdir(tmp_path)
    result = run("check", path)
    number = 2 if key == "name" else 6
    where = f"{tmp_path / 'newsletter.toml'}:{number}: newsletter.{key}: "
    _refused(result.output, result.exit_code, where, needle)


def test_idn_sender_domain_gives_an_ascii_list_id(tmp_path: Path, monkeypatch) -> None:
    """`from` on an IDN domain: check passes and send builds List-Id from the ASCII form."""
    config = MINIMAL_CONFIG.replace("news@example.org", "news@bücher.example.org")
    path = _folder(tmp_path, HEAD + TEXT, config)
    monkeypatch.chdir(tmp_path)
    assert run("check", path).exit_code == 0
    result = run("send", path, "--yes")
    assert result.exit_code == 0, result.output
    [message] = (tmp_path / "outbox" / "new").iterdir()
    assert b"List-Id: Test news <xn--bcher-kva.example.org>" in message.read_bytes()


SMTP_REFUSED = {
    "plaintext off this machine": ('host = "smtp.acme-mail.net"\nsecurity = "none"\n', "security"),
    "password in clear text": (
        'host = "smtp.acme-mail.net"\nsecurity = "none"\nallow_plaintext = true\n'
        'username = "news"\n',
        "security",
    ),
}


@pytest.mark.parametrize("command", ["check", "send"])
@pytest.mark.parametrize(("settings", "key"), SMTP_REFUSED.values(), ids=SMTP_REFUSED.keys())
def test_smtp_settings_send_refuses_are_check_errors(
    tmp_path: Path, monkeypatch, command: str, settings: str, key: str
) -> None:
    """[smtp] settings that stop `send` before it connects are a check error naming the key
    (check said "0 error(s)" for `security = "none"` to a remote host)."""
    path = _folder(tmp_path, HEAD + TEXT, MINIMAL_CONFIG + "[smtp]\n" + settings)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 40)
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "not used: refused before any connection")
    result = run(command, path, *(["--yes"] if command == "send" else []))
    _refused(result.output, result.exit_code, f"smtp.{key}: ", "unencrypted")
    assert not (tmp_path / ".newsletter" / "sends").exists()


@pytest.mark.parametrize(
    "host", ["smtp.acme-mail.net:587", "[::1]", "exa mple.org", "a\nb", "smtp..acme.net", "-x"]
)
def test_smtp_host_that_is_not_a_host_is_a_config_error(
    tmp_path: Path, monkeypatch, host: str
) -> None:
    """[smtp] host is a host name or an IP address: a port, brackets or a blank in it is
    newsletter.toml:line: smtp.host (was: a send paused after five failed connections)."""
    escaped = host.replace("\n", "\\n")
    path = _folder(tmp_path, HEAD + TEXT, MINIMAL_CONFIG + f'[smtp]\nhost = "{escaped}"\n')
    monkeypatch.chdir(tmp_path)
    result = run("check", path)
    _refused(result.output, result.exit_code, f"{tmp_path / 'newsletter.toml'}:7: smtp.host: ", "")


@pytest.mark.parametrize(
    "url",
    [
        "https://a.org/r?u={{ subscriber.email }}",
        "https://a.org/{{ subscriber.city | default('paris') }}/",
        "https://{{ subscriber.region | default('eu') }}.a.org/",
    ],
)
def test_a_personalised_link_is_not_a_blank_or_a_bad_host(
    tmp_path: Path, monkeypatch, url: str
) -> None:
    """Merge fields in a link are filled per reader: the blanks inside `{{ }}` and a host made
    of one are not the link's own, so check and send take the link."""
    toml_url = url.replace("'", "\\u0027")
    path = _folder(tmp_path, HEAD + ARTICLE + f'cta = {{ text = "x", url = "{toml_url}" }}\n')
    monkeypatch.chdir(tmp_path)
    result = run("check", path)
    assert "blocks[0].cta.url" not in result.output, result.output


@pytest.mark.parametrize(
    ("footer", "needle"),
    [
        ("[site](#)", "placeholder"),
        ("[site](javascript:alert(1))", "is not an https:// or mailto: link"),
        ("[site](<https://exa mple.org/>)", "is not a host name"),
        ("[site](https://example.org/)", "placeholder host"),
    ],
)
@pytest.mark.parametrize("command", ["check", "send"])
def test_footer_links_are_checked_like_issue_links(
    tmp_path: Path, monkeypatch, command: str, footer: str, needle: str
) -> None:
    """The footer (Markdown in newsletter.toml) is in every copy: its links are checked as the
    issue's are, naming newsletter.footer (they passed unchecked)."""
    config = MINIMAL_CONFIG + f'footer = "{footer}"\n'
    path = _folder(tmp_path, HEAD + TEXT, config)
    monkeypatch.chdir(tmp_path)
    result = run(command, path, *(["--yes"] if command == "send" else []))
    where = f"{tmp_path / 'newsletter.toml'}: newsletter.footer: link 'site': "
    _refused(result.output, result.exit_code, where, needle)
    assert not (tmp_path / ".newsletter" / "sends").exists()
