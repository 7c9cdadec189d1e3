"""iter_inputs()/check_sources(): lists as users really have them, read line by line."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from domainscan.errors import InputError
from domainscan.inputs import MAX_LINE_BYTES, check_sources, iter_inputs
from domainscan.models import InvalidInput, Target


def read(tmp_path: Path, content: bytes, *, name: str = "domains.txt") -> list[Target | InvalidInput]:
    path = tmp_path / name
    path.write_bytes(content)
    return list(iter_inputs([], [str(path)], io.BytesIO()))


def summary(items: list[Target | InvalidInput]) -> list[tuple[str, int | None, str]]:
    """(domain or 'invalid: reason', line, input) per item."""
    return [
        (item.domain if isinstance(item, Target) else f"invalid: {item.reason}", item.line, item.input)
        for item in items
    ]


def test_plain_list_with_bom_crlf_tabs_blank_lines_and_comments(tmp_path: Path) -> None:
    content = (
        b"\xef\xbb\xbfexample.com\r\n"
        b"\r\n"
        b"# a comment line\r\n"
        b"\t  Www.Example.ORG \t\r\n"
        b"   # an indented comment\n"
        b"https://shop.example.net/cart  # trailing comment\n"
        b"example.info\t# after a tab\n"
        b"last.example"  # no final newline
    )
    assert summary(read(tmp_path, content)) == [
        ("example.com", 1, "example.com"),
        ("example.org", 4, "Www.Example.ORG"),
        ("shop.example.net", 6, "https://shop.example.net/cart"),
        ("example.info", 7, "example.info"),
        ("last.example", 8, "last.example"),
    ]


def test_targets_carry_their_source(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(b"example.com\n")
    (item,) = iter_inputs([], [str(path)], io.BytesIO())
    assert item == Target("example.com", "example.com", None, "example.com", 1, str(path))


def test_fragment_without_space_is_not_a_comment(tmp_path: Path) -> None:
    assert summary(read(tmp_path, b"example.com#about\n")) == [("example.com", 1, "example.com#about")]


def test_invalid_lines_become_invalid_inputs_in_place(tmp_path: Path) -> None:
    items = read(tmp_path, b"good.com\nlocalhost\n10.0.0.1\nalso-good.com\n")
    assert summary(items) == [
        ("good.com", 1, "good.com"),
        ("invalid: 'localhost' has no dot: a single label is not a public site", 2, "localhost"),
        ("invalid: IP addresses are not domains: 10.0.0.1", 3, "10.0.0.1"),
        ("also-good.com", 4, "also-good.com"),
    ]
    assert all(item.source == str(tmp_path / "domains.txt") for item in items)


def test_duplicates_are_kept(tmp_path: Path) -> None:
    items = read(tmp_path, b"example.com\nwww.example.com\nexample.com\n")
    assert [item.domain for item in items if isinstance(item, Target)] == ["example.com"] * 3


def test_idn_lines_are_decoded_as_utf8(tmp_path: Path) -> None:
    assert summary(read(tmp_path, "Bücher.de\n".encode())) == [("xn--bcher-kva.de", 1, "Bücher.de")]


def test_a_line_that_is_not_utf8_is_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    items = read(tmp_path, b"one.com\nb\xfccher.de\ntwo.com\n")
    assert summary(items) == [
        ("one.com", 1, "one.com"),
        ("invalid: not UTF-8 text", 2, "b\\xfccher.de"),
        ("two.com", 3, "two.com"),
    ]


def test_a_1mb_line_is_rejected_and_later_lines_still_come_through(tmp_path: Path) -> None:
    content = b"before.com\n" + b"x" * (1024 * 1024) + b"\nafter.com\n" + b"y" * 5000 + b"\r\nend.com"
    items = read(tmp_path, content)
    assert [(s[0], s[1]) for s in summary(items)] == [
        ("before.com", 1),
        (f"invalid: line too long (over {MAX_LINE_BYTES} bytes)", 2),
        ("after.com", 3),
        (f"invalid: line too long (over {MAX_LINE_BYTES} bytes)", 4),
        ("end.com", 5),
    ]
    assert len(items[1].input) < 100


def test_line_length_limit_is_exact_and_ignores_the_line_ending(tmp_path: Path) -> None:
    longest = b"example.com #" + b"c" * (MAX_LINE_BYTES - 13)
    items = read(tmp_path, longest + b"\r\n" + longest + b"c\n")
    assert summary(items) == [
        ("example.com", 1, "example.com"),
        (f"invalid: line too long (over {MAX_LINE_BYTES} bytes)", 2, "example.com #" + "c" * 67 + "..."),
    ]


def test_stdin_via_dash_after_arguments(tmp_path: Path) -> None:
    path = tmp_path / "more.txt"
    path.write_bytes(b"from-file.com\n")
    stdin = io.BytesIO(b"from-stdin.com\n# comment\nbad..com\n")
    items = list(iter_inputs(["arg.com", "http://second.org/x"], ["-", str(path)], stdin))
    assert [(item.input, item.line, item.source) for item in items] == [
        ("arg.com", 1, "args"),
        ("http://second.org/x", 2, "args"),
        ("from-stdin.com", 1, "stdin"),
        ("bad..com", 3, "stdin"),
        ("from-file.com", 1, str(path)),
    ]
    assert isinstance(items[3], InvalidInput)
    assert items[3].reason == "empty label in 'bad..com'"


def test_invalid_argument_becomes_invalid_input() -> None:
    (item,) = iter_inputs([""], [], io.BytesIO())
    assert item == InvalidInput("", "empty input", 1, "args")


def test_csv_by_website_column_with_quoted_values(tmp_path: Path) -> None:
    content = (
        b"Name,Website,Notes\r\n"
        b'"Acme, Inc.",https://www.acme.com/,"says ""hi"""\r\n'
        b"Empty,,nothing here\r\n"
        b'Quoted,"http://quoted.org:8080/a,b",\r\n'
        b"\r\n"
        b"Short row\r\n"
        b"Bad,not a domain,\r\n"
    )
    assert summary(read(tmp_path, content, name="list.csv")) == [
        ("acme.com", 2, "https://www.acme.com/"),
        ("quoted.org:8080", 4, "http://quoted.org:8080/a,b"),
        ("invalid: invalid character ' ' in 'not a domain'", 7, "not a domain"),
    ]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"url;domain;website\nu.com;d.com;w.com\n", id="semicolon-prefers-domain"),
        pytest.param(b"website\turl\nw.com\td.com\n", id="tab-prefers-url"),
        pytest.param(b"\xef\xbb\xbf\n DOMAIN , other\nd.com,x\n", id="bom-blank-line-case-spaces"),
        pytest.param(b'"Name","URL"\r\n"Acme","d.com"\r\n', id="quoted-header-crlf"),
        pytest.param(b"domain\nd.com\n", id="single-column"),
    ],
)
def test_csv_header_detection(tmp_path: Path, content: bytes) -> None:
    items = read(tmp_path, content)
    assert [(item.input, item.domain) for item in items if isinstance(item, Target)] == [("d.com", "d.com")]
    assert len(items) == 1


def test_comma_line_without_a_known_column_is_plain_text(tmp_path: Path) -> None:
    items = read(tmp_path, b"a.com,b.com\n")
    assert [type(item) for item in items] == [InvalidInput]
    assert items[0].input == "a.com,b.com"


def test_csv_bad_lines_are_reported_in_order(tmp_path: Path) -> None:
    content = b"id,url\n1,one.com\n2,tw\xffo.com\n3," + b"z" * 5000 + b"\n4,four.com\n"
    assert [(s[0], s[1]) for s in summary(read(tmp_path, content))] == [
        ("one.com", 2),
        ("invalid: not UTF-8 text", 3),
        (f"invalid: line too long (over {MAX_LINE_BYTES} bytes)", 4),
        ("four.com", 5),
    ]


def test_empty_and_blank_files_yield_nothing(tmp_path: Path) -> None:
    assert read(tmp_path, b"") == []
    assert read(tmp_path, b"\n \r\n\t\n") == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary, not a list of domains", id="png"),
        pytest.param(b"example.com\n" * 100 + b"\x00", "looks binary, not a list of domains", id="nul-later"),
        pytest.param("example.com\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8", id="utf16"),
    ],
)
def test_binary_file_is_refused_before_any_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "domains.bin"
    path.write_bytes(content)
    items = iter_inputs(["first.com"], [str(path)], io.BytesIO())
    assert next(items).input == "first.com"
    with pytest.raises(InputError) as caught:
        next(items)
    assert str(caught.value) == f"{path} {message}"


def test_nul_after_the_first_8kib_is_just_a_bad_line(tmp_path: Path) -> None:
    items = read(tmp_path, b"example.com\n" * 1000 + b"a\x00b.com\n")
    assert len(items) == 1001
    assert isinstance(items[-1], InvalidInput)
    assert items[-1].line == 1001


def test_binary_stdin_is_refused() -> None:
    with pytest.raises(InputError, match=r"^stdin looks binary"):
        list(iter_inputs([], ["-"], io.BytesIO(b"\x00\x01\x02")))


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        list(iter_inputs([], ["domains.txt"], io.BytesIO()))
    assert str(caught.value) == "cannot read domains.txt: no such file"
    with pytest.raises(InputError, match=r"^cannot read domains.txt: no such file$"):
        check_sources(["-", "domains.txt"])


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"is a directory$"):
        list(iter_inputs([], [str(tmp_path)], io.BytesIO()))
    with pytest.raises(InputError, match=f"^{re.escape(f'cannot read {tmp_path}: is a directory')}$"):
        check_sources([str(tmp_path)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_bytes(b"example.com\n")
    path.chmod(0)
    with pytest.raises(InputError, match=r"permission denied$"):
        check_sources([str(path)])
    with pytest.raises(InputError, match=r"permission denied$"):
        list(iter_inputs([], [str(path)], io.BytesIO()))


def test_unreadable_path_is_reported_by_check_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.txt"
    path.write_bytes(b"example.com\n")
    monkeypatch.setattr(os, "access", lambda *_args, **_kwargs: False)
    with pytest.raises(InputError, match=f"^{re.escape(f'cannot read {path}: permission denied')}$"):
        check_sources([str(path)])


def test_a_read_error_becomes_input_error() -> None:
    class FailingStream(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise PermissionError(13, "Permission denied")

        read1 = read

    with pytest.raises(InputError, match=r"^cannot read stdin: permission denied$"):
        list(iter_inputs([], ["-"], FailingStream()))


def test_check_sources_reports_the_first_bad_path(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes(b"example.com\n")
    check_sources([str(good), "-"])
    with pytest.raises(InputError, match="missing-1"):
        check_sources([str(good), str(tmp_path / "missing-1"), str(tmp_path / "missing-2")])


def test_a_missing_file_is_reported_only_when_reached(tmp_path: Path) -> None:
    items = iter_inputs(["a.com"], [str(tmp_path / "nope.txt")], io.BytesIO())
    assert next(items).input == "a.com"
    with pytest.raises(InputError, match="no such file"):
        next(items)


def test_large_input_streams_without_reading_it_all() -> None:
    class CountingStream(io.BytesIO):
        """Fails the test if anyone reads the whole stream at once."""

        def read(self, size: int | None = -1) -> bytes:
            assert size is not None
            assert 0 < size <= 64 * 1024
            return super().read(size)

        read1 = read

    stream = CountingStream(b"example.com\n" * 200_000)
    items = iter_inputs([], ["-"], stream)
    assert next(items).line == 1
    assert stream.tell() < 64 * 1024
    assert sum(1 for _ in items) == 199_999
