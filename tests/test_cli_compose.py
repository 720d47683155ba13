"""The compose commands through the CLI: init, new, render, preview, --version, --config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from newsletter import __version__
from tests.compose_helpers import MINIMAL_CONFIG, ROOT, SAMPLE, run, write


def test_version() -> None:
    """`newsletter --version` prints the version."""
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"newsletter {__version__}"


def test_python_dash_m() -> None:
    """`python -m newsletter` is the same program."""
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == f"newsletter {__version__}"


def test_init_scaffolds_and_never_overwrites(tmp_path: Path) -> None:
    """init creates the folder; run again it keeps every existing file as it was."""
    folder = tmp_path / "news"
    assert run("init", folder).exit_code == 0
    for name in ("newsletter.toml", ".gitignore", "templates/base.mjml.j2", "subscribers"):
        assert (folder / name).exists(), name
    assert len(list((folder / "issues").glob("*.toml"))) == 1
    (folder / "newsletter.toml").write_text("# mine\n")
    result = run("init", folder)
    assert result.exit_code == 0
    assert "kept (exists)" in result.output
    assert (folder / "newsletter.toml").read_text() == "# mine\n"


def test_scaffolded_issue_renders(tmp_path: Path, monkeypatch) -> None:
    """The first issue of a fresh folder renders (check only asks for the postal address)."""
    folder = tmp_path / "news"
    run("init", folder)
    monkeypatch.chdir(folder)
    [issue] = (folder / "issues").glob("*.toml")
    result = run("check", issue)
    assert "newsletter.postal_address: no postal address" in result.output
    assert "1 error(s)" in result.output


def test_new_writes_skeleton_once(tmp_path: Path, monkeypatch) -> None:
    """new writes issues/<YYYY-MM>-<slug>.toml, prints its path, and refuses to overwrite."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    monkeypatch.chdir(tmp_path)
    result = run("new", 'Ça va? Our "October" news')
    assert result.exit_code == 0
    path = Path(result.stdout.strip())
    assert path.parent == tmp_path.resolve() / "issues"
    assert path.name.endswith("-ca-va-our-october-news.toml")
    text = path.read_text()
    for kind in ("article", "links", "event", "text", "images"):
        assert f'kind = "{kind}"' in text
    assert run("check", path).exit_code == 0
    again = run("new", 'Ça va? Our "October" news')
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert path.read_text() == text


def test_render_writes_html_and_text(tmp_path: Path, monkeypatch) -> None:
    """render writes <slug>.html and <slug>.txt to -o DIR (created) and prints sizes."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out" / "deeper"
    result = run("render", SAMPLE, "-o", out)
    assert result.exit_code == 0
    html, text = out / "2021-09-cohes3ion.html", out / "2021-09-cohes3ion.txt"
    assert f"{html}  {html.stat().st_size:,} bytes" in result.output
    assert text.read_text().startswith("COHES3ION NEWSLETTER")


def test_issue_outside_the_folder_with_config(tmp_path: Path) -> None:
    """An ISSUE may be any path; --config names the newsletter folder."""
    issue = tmp_path / "elsewhere.toml"
    issue.write_bytes(SAMPLE.read_bytes())
    result = run("--config", ROOT / "newsletter.toml", "render", issue, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere.html").exists()


def test_preview_without_browser_prints_the_file(tmp_path: Path, monkeypatch) -> None:
    """preview renders into build/ and says where the file is when no browser opens."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    issue = write(
        tmp_path / "issues" / "x.toml",
        'title = "T"\nsubject = "S"\ndate = 2024-01-02\n[[blocks]]\nkind = "text"\nbody = "Hi"\n',
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BROWSER", "true")  # a "browser" that opens nothing, so no window here
    result = run("preview", issue)
    assert result.exit_code == 0
    assert (tmp_path / "build" / "x.html").exists()
    assert "x.html" in result.output


def test_usage_error_exits_2() -> None:
    """A usage error (unknown option) exits 2."""
    assert run("render", "--bogus").exit_code == 2


PERSONAL = (
    'title = "T"\nsubject = "Hello {{ subscriber.name | default(\'reader\') }}"\n'
    'date = 2024-01-02\n[[blocks]]\nkind = "text"\n'
    "body = \"Dear {{ subscriber.name | default('reader') }} of "
    "{{ subscriber.city | default('Europe') }}, you are {{ subscriber.email }}.\"\n"
)


def _personal_folder(tmp_path: Path, monkeypatch) -> Path:
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    write(
        tmp_path / "subscribers" / "news.csv",
        "email,name,status,city\nzofia@example.net,Zofia <Wójcik>,subscribed,Kraków\n"
        "bob@example.net,,subscribed,\n",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BROWSER", "true")  # a "browser" that opens nothing
    return write(tmp_path / "issues" / "x.toml", PERSONAL)


def test_preview_as_fills_merge_fields_from_that_subscriber(tmp_path: Path, monkeypatch) -> None:
    """preview --as EMAIL fills name, email and any column from that row (found in any case),
    HTML-escaped in the page; the plain preview keeps the defaults."""
    issue = _personal_folder(tmp_path, monkeypatch)
    result = run("preview", issue, "--as", "ZOFIA@example.net")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "build" / "x.html").read_text()
    text = (tmp_path / "build" / "x.txt").read_text()
    assert "Dear Zofia &lt;Wójcik&gt; of Kraków, you are zofia@example.net." in html
    assert "Dear Zofia <Wójcik> of Kraków, you are zofia@example.net." in text
    assert run("preview", issue).exit_code == 0
    assert "Dear reader of Europe" in (tmp_path / "build" / "x.txt").read_text()


def test_preview_as_blank_columns_take_the_defaults(tmp_path: Path, monkeypatch) -> None:
    """A subscriber's blank column shows the field's default, as in the message sent to them."""
    issue = _personal_folder(tmp_path, monkeypatch)
    assert run("preview", issue, "--as", "bob@example.net").exit_code == 0
    text = (tmp_path / "build" / "x.txt").read_text()
    assert "Dear reader of Europe, you are bob@example.net." in text


def test_preview_as_someone_in_no_list_is_one_error(tmp_path: Path, monkeypatch) -> None:
    """preview --as an address no list holds: one error line, exit 1, nothing written."""
    issue = _personal_folder(tmp_path, monkeypatch)
    result = run("preview", issue, "--as", "nobody@example.net")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: nobody@example.net is in no list of {tmp_path / 'subscribers'}"
    ]
    assert not (tmp_path / "build").exists()


def test_new_date_sets_the_date_and_the_file_name(tmp_path: Path, monkeypatch) -> None:
    """new --date YYYY-MM-DD writes that date into the issue and its YYYY-MM into the name."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    monkeypatch.chdir(tmp_path)
    result = run("new", "Autumn news", "--date", "2031-10-05")
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.name == "2031-10-autumn-news.toml"
    assert "\ndate = 2031-10-05\n" in path.read_text()
    assert run("check", path).exit_code == 0


def test_new_date_that_is_no_date_is_a_usage_error(tmp_path: Path, monkeypatch) -> None:
    """new --date with a day that does not exist (or another format) writes nothing, exit 2."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    monkeypatch.chdir(tmp_path)
    for bad in ("2031-02-30", "05/10/2031", "2031-10"):
        result = run("new", "Autumn news", "--date", bad)
        assert result.exit_code == 2, result.output
        assert "--date" in result.output
    assert not (tmp_path / "issues").exists()


def test_new_titles_without_latin_letters_get_their_own_files(tmp_path: Path, monkeypatch) -> None:
    """Two titles that give no slug of their own (Greek, Japanese) in one month are two issues,
    not 'already exists: choose another title'; the same Latin title twice is still refused."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    monkeypatch.chdir(tmp_path)
    paths = []
    for title in ("Νέα του μήνα", "今月のニュース"):
        result = run("new", title, "--date", "2027-03-01")
        assert result.exit_code == 0, result.output
        paths.append(Path(result.stdout.strip()))
    assert [p.name for p in paths] == ["2027-03-issue.toml", "2027-03-issue-2.toml"]
    assert 'title = "今月のニュース"' in paths[1].read_text(encoding="utf-8")
    assert run("new", "News", "--date", "2027-03-01").exit_code == 0
    assert run("new", "News", "--date", "2027-03-01").exit_code == 1


def test_new_with_an_empty_title_is_refused(tmp_path: Path, monkeypatch) -> None:
    """A title of nothing, spaces or Unicode spaces becomes no subject: one error, no file."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    monkeypatch.chdir(tmp_path)
    for title in ("", "   ", "\u00a0\u2003"):
        result = run("new", title)
        assert result.exit_code == 1, result.output
        assert "the title is empty" in result.output
    assert not (tmp_path / "issues").exists()
