"""newsletter.toml + environment: lookup, overrides, located errors, secrets only from the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import find_config, load_config
from newsletter.errors import ConfigError
from tests.compose_helpers import MINIMAL_CONFIG, run, write


def test_found_in_parent_folder(tmp_path: Path) -> None:
    """Commands find newsletter.toml in the current folder or any parent."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    (tmp_path / "issues" / "deep").mkdir(parents=True)
    assert find_config(tmp_path / "issues" / "deep") == tmp_path.resolve() / "newsletter.toml"


def test_missing_config_says_what_to_do(tmp_path: Path) -> None:
    """Without a newsletter.toml the error suggests init or --config."""
    with pytest.raises(ConfigError, match="newsletter init"):
        find_config(tmp_path)


def test_environment_overrides_file(tmp_path: Path) -> None:
    """[newsletter] key -> NEWSLETTER_<KEY>, [smtp] key -> NEWSLETTER_SMTP_<KEY>, typed."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + "[smtp]\nport = 25\n")
    env = {
        "NEWSLETTER_NAME": "From env",
        "NEWSLETTER_SMTP_PORT": "2525",
        "NEWSLETTER_SMTP_RETRY_DELAYS": "1,2.5",
        "NEWSLETTER_SMTP_ALLOW_PLAINTEXT": "true",
    }
    config = load_config(explicit=tmp_path, environ=env)
    assert config.newsletter.name == "From env"
    assert config.smtp.port == 2525
    assert config.smtp.retry_delays == (1.0, 2.5)
    assert config.smtp.allow_plaintext is True


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    """A malformed environment value is reported with the variable's name."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    with pytest.raises(ConfigError, match="NEWSLETTER_SMTP_PORT: must be a whole number"):
        load_config(explicit=tmp_path, environ={"NEWSLETTER_SMTP_PORT": "twenty"})


def test_unknown_key_and_bad_values_are_located(tmp_path: Path) -> None:
    """Unknown keys, http base_url and wrong types are all reported with their lines."""
    path = write(
        tmp_path / "newsletter.toml",
        MINIMAL_CONFIG.replace("https://news.example.org", "http://news.example.org")
        + 'colour = "red"\n[smtp]\nport = "25"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=path, environ={})
    text = str(caught.value)
    assert f"{path}:5: newsletter.base_url: must be an https:// URL" in text
    assert f"{path}:6: newsletter.colour: unknown key" in text
    assert f"{path}:8: smtp.port: must be a whole number, not str" in text


def test_password_in_file_is_refused(tmp_path: Path) -> None:
    """A password in the file is an error that says where it belongs."""
    path = write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + '[smtp]\npassword = "hunter2"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=path, environ={})
    assert "set NEWSLETTER_SMTP_PASSWORD instead" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_cli_reports_config_errors_without_traceback(tmp_path: Path, monkeypatch) -> None:
    """A broken newsletter.toml gives exit 1, file:line and no traceback."""
    write(tmp_path / "newsletter.toml", '[newsletter\nname = "x"\n')
    monkeypatch.chdir(tmp_path)
    result = run("new", "Hello")
    assert result.exit_code == 1
    assert f"{tmp_path / 'newsletter.toml'}:1:" in result.output
    assert "Traceback" not in result.output


def test_password_from_the_keyring() -> None:
    """Without NEWSLETTER_SMTP_PASSWORD the keyring is asked (service newsletter, user@host)."""
    import keyring
    import keyring.backend

    from newsletter.config import SmtpSettings, smtp_password

    class Memory(keyring.backend.KeyringBackend):
        priority = 1  # type: ignore[assignment]  # keyring declares it as a property
        store: dict[tuple[str, str], str] = {}  # noqa: RUF012  # one test's scratch store

        def get_password(self, service: str, username: str) -> str | None:
            return self.store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.store.pop((service, username), None)

    before = keyring.get_keyring()
    keyring.set_keyring(Memory())
    try:
        keyring.set_password("newsletter", "me@smtp.example.org", "from-keyring")
        smtp = SmtpSettings(host="smtp.example.org", username="me")
        assert smtp_password(smtp, environ={}) == "from-keyring"
        assert smtp_password(smtp, environ={"NEWSLETTER_SMTP_PASSWORD": "env"}) == "env"
        other = SmtpSettings(host="smtp.example.org", username="you")
        assert smtp_password(other, environ={}) is None
    finally:
        keyring.set_keyring(before)


OUT_OF_RANGE = {
    "port over 65535": ("port", "70000"),
    "port far over": ("port", "99999999999999999999999"),
    "port 0": ("port", "0"),
    "negative port": ("port", "-1"),
    "negative retry delay": ("retry_delays", "[-1.0]"),
    "retry delay nan": ("retry_delays", "[nan]"),
    "retry delay inf": ("retry_delays", "[inf]"),
    "timeout inf": ("timeout", "inf"),
    "rate nan": ("rate", "nan"),
    "connections over a sane bound": ("connections", "1000000000"),
}


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_numbers_out_of_range_are_located_errors(tmp_path: Path, name: str, value: str) -> None:
    """An [smtp] number no connection can use is newsletter.toml:line: smtp.key, in the file
    and from the environment (send ended in an OverflowError traceback)."""
    path = write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + f"[smtp]\n{name} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=path, environ={})
    assert f"{path}:7: smtp.{name}: " in str(caught.value)
    env_value = value.strip("[]")
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    variable = f"NEWSLETTER_SMTP_{name.upper()}"
    with pytest.raises(ConfigError, match=f"{variable}: "):
        load_config(explicit=path, environ={variable: env_value})


def test_cli_send_with_an_impossible_port_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """`send` through an SMTP port out of range: exit 1, one line naming the key."""
    from tests.compose_helpers import sample_folder

    folder = sample_folder(tmp_path)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", "70000")
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "none")
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 40)
    result = run("send", "issues/2021-09-cohes3ion.toml", "--yes")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: NEWSLETTER_SMTP_PORT: ")


SHOWN_TEXT_REFUSED = {
    "blank name": ('name = "  "', "name"),
    "name of no-break spaces": ('name = "\\u00a0"', "name"),
    "empty unsubscribe text": ('unsubscribe_text = ""', "unsubscribe_text"),
    "blank unsubscribe text": ('unsubscribe_text = " \\t"', "unsubscribe_text"),
    "colour that is not hex": ('accent_colour = "#zzzzzz"', "accent_colour"),
    "language that is not a tag": ('language = "en gb"', "language"),
    "empty language": ('language = ""', "language"),
}


@pytest.mark.parametrize(
    ("line", "name"), SHOWN_TEXT_REFUSED.values(), ids=SHOWN_TEXT_REFUSED.keys()
)
def test_settings_shown_in_every_copy_must_be_usable(tmp_path: Path, line: str, name: str) -> None:
    """Text every copy shows (the name, the unsubscribe link's wording) may not be blank, and a
    colour or language must be one: an empty unsubscribe_text made the footer's unsubscribe link
    invisible in every copy while check said 0 errors."""
    text = MINIMAL_CONFIG.replace('name = "Test news"\n', "") + f"{line}\n"
    if name != "name":
        text += 'name = "Test news"\n'
    path = write(tmp_path / "newsletter.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=path, environ={})
    assert f"{path}:5: newsletter.{name}: " in str(caught.value)


def test_signup_works_without_a_signup_table(tmp_path: Path) -> None:
    """Every [signup] key has a default: on, the default list, a consent sentence, 7 days,
    at least 10 sign-ups per client an hour, loopback as the proxy, a body limit."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    signup = load_config(explicit=tmp_path).signup
    assert signup.enabled is True
    assert signup.lists == ()
    assert signup.consent.strip()
    assert signup.expires_days == 7
    assert signup.client_hourly_limit >= 10
    assert set(signup.trusted_proxies) == {"127.0.0.1", "::1"}
    assert 1024 <= signup.max_body <= 65536


def test_signup_keys_from_file_and_environment(tmp_path: Path) -> None:
    """Lists of strings from TOML or a comma-separated variable."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + '[signup]\nlists = ["news", "events"]\n')
    assert load_config(explicit=tmp_path).signup.lists == ("news", "events")
    env = {
        "NEWSLETTER_SIGNUP_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
        "NEWSLETTER_SIGNUP_ENABLED": "no",
    }
    config = load_config(explicit=tmp_path, environ=env)
    assert config.signup.trusted_proxies == ("10.0.0.0/8", "::1")
    assert config.signup.enabled is False


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('lists = ["../etc/passwd"]', "must be list names"),
        ('lists = ["news", "news.csv"]', "names a list twice"),
        ("lists = [1]", "must be a list of strings"),
        ('trusted_proxies = ["proxy.example.org"]', "must be IP addresses or networks"),
        ("expires_days = 0", "from 1 to 30"),
        ('consent = "  "', "is blank"),
        ("max_body = 10", "1024 or more"),
        ("sign_up = true", "unknown key"),
    ],
)
def test_bad_signup_values_are_located(tmp_path: Path, line: str, message: str) -> None:
    """A bad [signup] value is reported with the file, line and key."""
    path = write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + f"[signup]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=tmp_path)
    [problem] = caught.value.problems
    assert message in problem.message
    assert (problem.path, problem.line) == (path, MINIMAL_CONFIG.count("\n") + 1)
