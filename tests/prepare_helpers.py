"""What the `hicmae prepare` tests share: a refused tree says every expected thing and writes nothing."""

from __future__ import annotations

from pathlib import Path


def assert_refused(capsys, prepare, raw: Path, out: Path, *expected: str) -> None:
    """``prepare(raw, out)`` exits 2, its error names every ``expected`` text, and ``out`` holds no file."""
    assert prepare(raw, out) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert not out.exists() or not any(out.iterdir())
