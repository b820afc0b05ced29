"""ConsoleFile: following one growing console log on real files."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from node_agent.console_file import ConsoleFile, ConsoleLine, FilePosition, ReadResult


def texts(result: ReadResult) -> list[str]:
    return [line.text for line in result.lines]


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def drain(console: ConsoleFile) -> list[ReadResult]:
    """Read until no `more` is announced."""
    results = [console.read()]
    while results[-1].more:
        results.append(console.read())
    return results


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "vm1.log"


def test_reads_only_new_bytes(log: Path) -> None:
    log.write_bytes(b"one\ntwo\n")
    with ConsoleFile(log) as console:
        first = console.read()
        assert texts(first) == ["one", "two"]
        assert not first.restarted and not first.missing and first.partial == ""
        assert console.read().lines == ()
        append(log, b"three\n")
        assert texts(console.read()) == ["three"]
        assert console.position == FilePosition(log.stat().st_ino, 14)


def test_resume_at_end_of_large_file_reads_nothing_old(log: Path) -> None:
    log.write_bytes(b"x" * 79 + b"\n" * 1 + (b"y" * 79 + b"\n") * 200_000)   # 16 MB
    size = log.stat().st_size
    with ConsoleFile(log, resume=FilePosition(log.stat().st_ino, size)) as console:
        result = console.read()
        assert result.lines == () and not result.restarted
        append(log, b"new\n")
        assert texts(console.read()) == ["new"]


def test_resume_mid_file_and_mismatch(log: Path) -> None:
    log.write_bytes(b"a\nb\nc")
    with ConsoleFile(log) as console:
        console.read()
        pos = console.position
    assert pos == FilePosition(log.stat().st_ino, 4)        # before the unterminated "c"
    append(log, b"\nd\n")
    with ConsoleFile(log, resume=pos) as console:
        result = console.read()
        assert texts(result) == ["c", "d"] and not result.restarted
    for bad in (FilePosition(pos.inode + 1, 4), FilePosition(pos.inode, 10_000)):
        with ConsoleFile(log, resume=bad) as console:
            result = console.read()
            assert result.restarted and texts(result) == ["a", "b", "c", "d"]


def test_missing_then_created(log: Path) -> None:
    with ConsoleFile(log) as console:
        result = console.read()
        assert result.missing and result.lines == ()
        assert console.position is None
        log.write_bytes(b"boot\n")
        result = console.read()
        assert texts(result) == ["boot"] and not result.missing and not result.restarted


def test_truncation_restarts(log: Path) -> None:
    log.write_bytes(b"old boot line\nlogin: ")
    with ConsoleFile(log) as console:
        assert console.read().partial == "login: "
        with log.open("wb") as f:              # QEMU reopening with append='off'
            f.write(b"new\n")
        result = console.read()
        assert result.restarted and texts(result) == ["new"] and result.partial == ""
        append(log, b"more\n")
        result = console.read()
        assert not result.restarted and texts(result) == ["more"]


def test_rotation_finishes_old_file_first(log: Path) -> None:
    log.write_bytes(b"a\n")
    with ConsoleFile(log) as console:
        assert texts(console.read()) == ["a"]
        append(log, b"b\ntail without newline")
        log.rename(log.with_suffix(".log.1"))
        log.write_bytes(b"fresh\n")
        old = console.read()
        assert texts(old) == ["b", "tail without newline"]
        assert old.more and not old.restarted and not old.missing
        new = console.read()
        assert new.restarted and texts(new) == ["fresh"] and not new.more
        assert console.position == FilePosition(log.stat().st_ino, 6)


def test_rotation_with_nothing_left_switches_at_once(log: Path) -> None:
    log.write_bytes(b"a\n")
    with ConsoleFile(log) as console:
        console.read()
        log.rename(log.with_suffix(".log.1"))
        log.write_bytes(b"fresh\n")
        result = console.read()
        assert result.restarted and texts(result) == ["fresh"]


def test_deleted_then_recreated(log: Path) -> None:
    log.write_bytes(b"a\n")
    with ConsoleFile(log) as console:
        console.read()
        with log.open("ab") as writer:
            writer.write(b"last words\n")
            writer.flush()
            log.unlink()                        # old fd still open (by the writer and by us)
            result = console.read()
        assert texts(result) == ["last words"] and result.missing
        result = console.read()
        assert result.missing and result.lines == ()
        assert console.read().missing
        log.write_bytes(b"reborn\n")
        result = console.read()
        assert result.restarted and not result.missing and texts(result) == ["reborn"]


def test_invalid_utf8_is_lossless(log: Path) -> None:
    raw = b"ok \xff\xfe bad \xc3( \xe2\x82\n"
    log.write_bytes(raw)
    with ConsoleFile(log) as console:
        (line,) = console.read().lines
    assert line.text.encode("utf-8", "surrogateescape") == raw[:-1]


def test_multibyte_character_split_across_reads(log: Path) -> None:
    euro = "€".encode()                          # 3 bytes
    log.write_bytes(b"price: " + euro[:1])
    with ConsoleFile(log) as console:
        assert console.read().partial == "price: "
        append(log, euro[1:2])
        assert console.read().partial == "price: "
        append(log, euro[2:] + b" caf\xc3")
        assert console.read().partial == "price: € caf"
        append(log, b"\xa9\n")
        result = console.read()
        assert texts(result) == ["price: € café"] and result.partial == ""


def test_long_line_is_cut_into_pieces(log: Path) -> None:
    line = ("é" * 10 + "x") * 100                 # 2100 bytes, characters of 2 bytes
    log.write_bytes(line.encode() + b"\nshort\n")
    with ConsoleFile(log, max_line_bytes=64) as console:
        result = console.read()
    *pieces, last = result.lines
    assert [p.cont for p in pieces] == [True] * (len(pieces) - 1) + [False]
    assert last == ConsoleLine("short")
    assert all(len(p.text.encode()) <= 64 for p in pieces)
    assert "".join(p.text for p in pieces) == line            # no character split


def test_long_unterminated_line_is_bounded_and_continues(log: Path) -> None:
    with ConsoleFile(log, max_line_bytes=100) as console:
        log.write_bytes(b"z" * 250)
        result = console.read()
        assert [(len(p.text), p.cont) for p in result.lines] == [(100, True), (100, True)]
        assert result.partial == "z" * 50
        append(log, b"z" * 10 + b"\n")
        result = console.read()
        assert result.lines == (ConsoleLine("z" * 60),) and result.partial == ""


def test_prompt_is_partial_until_completed(log: Path) -> None:
    log.write_bytes(b"Welcome\nlogin: ")
    with ConsoleFile(log, max_line_bytes=16) as console:
        result = console.read()
        assert texts(result) == ["Welcome"] and result.partial == "login: "
        assert console.read() == ReadResult((), "login: ", False, False)
        append(log, b"root\n")
        result = console.read()
        assert texts(result) == ["login: root"] and result.partial == ""
        append(log, b"p" * 20)
        result = console.read()
        assert len(result.partial.encode()) <= 16


def test_crlf_stripped_lone_cr_kept(log: Path) -> None:
    log.write_bytes(b"dos\r\nprogress\r50%\r\n\r\n")
    with ConsoleFile(log) as console:
        assert texts(console.read()) == ["dos", "progress\r50%", ""]
        append(log, b"split\r")
        assert console.read().partial == "split\r"
        append(log, b"\n")
        assert texts(console.read()) == ["split"]


def test_read_is_capped_per_call(log: Path) -> None:
    log.write_bytes(b"0123456789\n" * 1000)            # 11000 bytes
    with ConsoleFile(log, max_read_bytes=4096) as console:
        results = drain(console)
    assert len(results) == 3 and [r.more for r in results] == [True, True, False]
    assert [t for r in results for t in texts(r)] == ["0123456789"] * 1000


def test_huge_single_line_uses_bounded_memory(log: Path) -> None:
    size = 50 * 1024 * 1024
    with log.open("wb") as f:
        f.truncate(size)                                  # sparse: 50 MB of NUL, no newline
    tracemalloc.start()
    try:
        with ConsoleFile(log) as console:
            total = 0
            while True:
                result = console.read()
                total += sum(len(p.text) for p in result.lines)
                if not result.more:
                    break
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total + len(result.partial) == size
    assert peak < 8 * 1024 * 1024, peak


def test_read_after_close_raises(log: Path) -> None:
    console = ConsoleFile(log)
    console.close()
    with pytest.raises(ValueError):
        console.read()


def test_directory_is_an_error(tmp_path: Path) -> None:
    with ConsoleFile(tmp_path) as console, pytest.raises(OSError):
        console.read()
    assert os.path.isdir(tmp_path)


@pytest.mark.parametrize("seed", range(5))
def test_random_appends_reassemble_exactly(log: Path, seed: int) -> None:
    import random

    rng = random.Random(seed)
    alphabet = [b"a", b"b", b"\n", b"\r", b"\r\n", "€".encode(), b"\xc3", b"\xa9", b"\xff", b" "]
    written = b""
    got = b""
    log.write_bytes(b"")
    with ConsoleFile(log, max_line_bytes=8, max_read_bytes=rng.choice([5, 64, 4096])) as console:
        for _ in range(200):
            data = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
            append(log, data)
            written += data
            for result in drain(console):
                assert not result.restarted and not result.missing
                for line in result.lines:
                    raw = line.text.encode("utf-8", "surrogateescape")
                    assert len(raw) <= 8
                    got += raw if line.cont else raw + b"\n"
        partial = result.partial.encode("utf-8", "surrogateescape")
    expected = written.replace(b"\r\n", b"\n")
    assert expected.startswith(got)
    assert expected[len(got):].startswith(partial) and len(expected) - len(got) <= 8


def test_truncated_and_regrown_between_reads_restarts(log: Path) -> None:
    log.write_bytes(b"previous boot\n")
    with ConsoleFile(log) as console:
        console.read()
        log.write_bytes(b"SeaBIOS\nLinux version 6.1\nmany more lines of the new boot\n")
        result = console.read()
        assert result.restarted
        assert texts(result) == ["SeaBIOS", "Linux version 6.1", "many more lines of the new boot"]
