"""qstore.secrets.read_password_file: what a password file holds, and one line when it cannot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qstore.secrets import SecretError, read_password_file


@pytest.mark.parametrize(
    ("content", "password"),
    [
        (b"s3cret\n", "s3cret"),
        (b"s3cret", "s3cret"),
        (b"s3cret\r\n", "s3cret"),
        (b" with spaces \nsecond line is a note\n", " with spaces "),
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_first_line_without_its_ending(tmp_path: Path, content: bytes, password: str) -> None:
    f = tmp_path / "pw"
    f.write_bytes(content)
    assert read_password_file(f) == password
    assert read_password_file(str(f)) == password


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        (lambda p: p.write_bytes(b""), "the first line is empty"),
        (lambda p: p.write_bytes(b"\nsecret on line two\n"), "the first line is empty"),
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"\xff\xfe\n"), "not UTF-8 text"),
    ],
)
def test_unusable_file_is_one_line_naming_it(tmp_path: Path, setup, why: str) -> None:
    f = tmp_path / "pw"
    setup(f)
    with pytest.raises(SecretError) as info:
        read_password_file(f)
    assert str(info.value) == f"password file {f}: {why}"
    assert "secret on line two" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    f.chmod(0)
    with pytest.raises(SecretError, match="permission denied"):
        read_password_file(f)
