"""Following one growing serial-console log file, reading only the bytes added since last time.

Like ``tail -F``: survives the file being missing, truncated (QEMU ``append='off'`` on a cold
start), replaced/rotated or deleted.  Bytes are kept losslessly (``surrogateescape``); a line
longer than ``max_line_bytes`` is cut into pieces, so memory stays bounded whatever the guest
prints.  Decoding is done on whole lines or pieces cut on a character boundary, so a UTF-8
character split between two writes is never turned into escapes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 64 * 1024
"""Bytes asked of the kernel per ``pread``."""
MAX_READ_BYTES = 1024 * 1024
"""Default cap on the bytes consumed by one ``read()`` call (see ``ReadResult.more``)."""
TAIL_BYTES = 64
"""Bytes before the offset compared on each read with new data (see ``ConsoleFile``)."""
_MISSING_ERRORS = (FileNotFoundError, NotADirectoryError)


@dataclass(frozen=True, slots=True)
class ConsoleLine:
    """One line of console text (or a piece of an over-long line)."""

    text: str
    """Decoded with errors="surrogateescape": ``text.encode("utf-8", "surrogateescape")``
    gives the bytes back."""
    cont: bool = False
    """True: this piece was cut at max_line_bytes; the next line continues it."""


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What one ``ConsoleFile.read()`` found."""

    lines: tuple[ConsoleLine, ...]
    """Complete lines (and cut pieces), in order."""
    partial: str
    """The current unterminated last line ("" if none), e.g. a prompt; surrogateescape-decoded.
    An incomplete trailing UTF-8 sequence is left out until the rest of it arrives."""
    restarted: bool
    """The file was truncated or replaced since the last read: `lines` start from the new
    file's beginning (the consumer should drop what it had)."""
    missing: bool
    """The file does not exist (now)."""
    more: bool = False
    """The per-call byte cap was reached, or a switch to a new file is due: call again now."""


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where to resume: the file's inode and the byte offset just after the last line
    (or cut piece) returned, so a resume never duplicates or loses a line."""

    inode: int
    offset: int


class ConsoleFile:
    """Follows one log file; each ``read()`` returns only what is new.

    Semantics worth knowing:

    * Missing at start: ``missing=True``.  Its first appearance is read from the start with
      ``restarted=False`` (``True`` if a ``resume`` position was given: it did not apply).
    * Truncated (size < offset): ``restarted=True``, read again from 0; the unterminated line
      held from before is dropped (its bytes are gone from the file).  A truncation followed
      by a rewrite to beyond the old offset before the next read is caught by comparing the
      last ``TAIL_BYTES`` before the offset (not after a ``resume``, nor if they are equal).
    * Replaced (the path names another inode) or deleted: the old descriptor is read to its
      end first and a held unterminated line is emitted as a complete line (no loss), in a
      call of its own with ``more=True``; the next call switches to the new file with
      ``restarted=True``, or reports ``missing`` (the old descriptor is then closed, so a
      deleted file's space is freed; later writes to the unlinked file are not seen).
    * ``resume``: used only if the file has that inode and is at least that long; otherwise
      the file is read from 0 with ``restarted=True``.
    * At most ``max_read_bytes`` are consumed per call (``more=True`` says there is more).
    * Errors other than "no such file" (e.g. permission denied) propagate as ``OSError``.
    """

    def __init__(self, path: Path, max_line_bytes: int = 4096,
                 resume: FilePosition | None = None, *,
                 max_read_bytes: int = MAX_READ_BYTES) -> None:
        if max_line_bytes < 4:
            raise ValueError("max_line_bytes must be at least 4 (one UTF-8 character)")
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self.max_read_bytes = max(1, max_read_bytes)
        self._resume = resume
        self._fd: int | None = None
        self._inode = 0
        self._offset = 0           # bytes of the open file consumed so far
        self._pending = b""        # unterminated line held (<= max_line_bytes after a read)
        self._tail = b""           # the last TAIL_BYTES consumed, to spot a rewritten file
        self._had_file = False     # a file was open before: the next open is a restart
        self._position: FilePosition | None = None
        self._closed = False

    @property
    def position(self) -> FilePosition | None:
        """Resume point (None until a file has been opened)."""
        if self._fd is not None:
            return FilePosition(self._inode, self._offset - len(self._pending))
        return self._position

    def close(self) -> None:
        """Close the descriptor; ``read()`` may not be called afterwards."""
        self._drop_fd()
        self._closed = True

    def __enter__(self) -> ConsoleFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> ReadResult:
        """Read what is new since the last call (never the whole file again)."""
        if self._closed:
            raise ValueError("ConsoleFile is closed")
        if self._fd is None:
            return self._open_and_read()
        try:
            path_inode: int | None = os.stat(self.path).st_ino
        except _MISSING_ERRORS:
            path_inode = None
        replaced = path_inode != self._inode
        restarted = False
        if not replaced:
            size = os.fstat(self._fd).st_size
            if size == self._offset:                       # the common case: nothing new
                return ReadResult((), self._partial(), False, False)
            if size < self._offset or self._rewritten():
                self._offset, self._pending, self._tail, restarted = 0, b"", b"", True
        lines, more = self._read_new()
        if not replaced or more:
            return ReadResult(tuple(lines), self._partial(), restarted, False, more)
        # Replaced or deleted: the old descriptor is drained; flush, then switch next call.
        if self._pending:
            lines.extend(self._pieces(self._pending, final=True)[0])
            self._pending = b""
        if lines:
            return ReadResult(tuple(lines), "", False, path_inode is None, True)
        self._drop_fd()
        if path_inode is None:
            return ReadResult((), "", False, True)
        return self._open_and_read()

    # -- internals -----------------------------------------------------------------------

    def _drop_fd(self) -> None:
        if self._fd is not None:
            self._position = self.position
            os.close(self._fd)
            self._fd = None

    def _open_and_read(self) -> ReadResult:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except _MISSING_ERRORS:
            return ReadResult((), "", False, True)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{self.path}: not a regular file")
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._inode, self._offset, self._pending = fd, st.st_ino, 0, b""
        self._tail = b""
        restarted = self._had_file
        resume, self._resume = self._resume, None
        if resume is not None:
            if resume.inode == st.st_ino and 0 <= resume.offset <= st.st_size:
                self._offset = resume.offset
            else:
                restarted = True
        self._had_file = True
        lines, more = self._read_new()
        return ReadResult(tuple(lines), self._partial(), restarted, False, more)

    def _read_new(self) -> tuple[list[ConsoleLine], bool]:
        """Consume new bytes (up to the cap) into lines; True if the cap was reached."""
        assert self._fd is not None
        lines: list[ConsoleLine] = []
        budget = self.max_read_bytes
        while budget > 0:
            chunk = os.pread(self._fd, min(CHUNK_BYTES, budget), self._offset)
            if not chunk:
                return lines, False
            self._offset += len(chunk)
            self._tail = (self._tail + chunk)[-TAIL_BYTES:] if len(chunk) < TAIL_BYTES \
                else chunk[-TAIL_BYTES:]
            budget -= len(chunk)
            self._split(self._pending + chunk if self._pending else chunk, lines)
        return lines, True

    def _rewritten(self) -> bool:
        """The bytes just before our offset changed: truncated and regrown between reads."""
        assert self._fd is not None
        size = len(self._tail)
        return size > 0 and os.pread(self._fd, size, self._offset - size) != self._tail

    def _split(self, data: bytes, out: list[ConsoleLine]) -> None:
        """Append data's complete lines to `out`; keep the rest (bounded) as pending."""
        end = data.rfind(b"\n") + 1
        rest = data[end:]
        limit = self.max_line_bytes
        if end:
            # One decode for the whole block: "\n" never occurs inside a UTF-8 sequence, so
            # this equals decoding line by line (and surrogateescape is per byte).
            text = data[:end].decode("utf-8", "surrogateescape")
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            lines = text.split("\n")
            lines.pop()
            for line in lines:
                # A character is at most 4 bytes: only long-looking lines need encoding.
                if len(line) * 4 <= limit or len(line.encode("utf-8", "surrogateescape")) <= limit:
                    out.append(ConsoleLine(line))
                else:
                    out.extend(self._pieces(line.encode("utf-8", "surrogateescape"), True)[0])
        if len(rest) > limit:
            pieces, rest = self._pieces(rest, final=False)
            out.extend(pieces)
        self._pending = rest

    def _pieces(self, line: bytes, final: bool) -> tuple[list[ConsoleLine], bytes]:
        """Cut `line` on character boundaries into pieces of at most max_line_bytes.

        final: the last piece ends the line; otherwise the tail (at most max_line_bytes)
        is returned instead and every piece is a continued one."""
        limit = self.max_line_bytes
        pieces: list[ConsoleLine] = []
        start = 0
        while len(line) - start > limit:
            cut = start + _char_boundary(line[start:start + limit])
            pieces.append(ConsoleLine(line[start:cut].decode("utf-8", "surrogateescape"), True))
            start = cut
        if not final:
            return pieces, line[start:]
        pieces.append(ConsoleLine(line[start:].decode("utf-8", "surrogateescape")))
        return pieces, b""

    def _partial(self) -> str:
        data = self._pending
        if not data:
            return ""
        end = _char_boundary(data, allow_empty=True)
        return data[:end].decode("utf-8", "surrogateescape")


def _char_boundary(data: bytes, allow_empty: bool = False) -> int:
    """Length of `data` without a trailing incomplete UTF-8 sequence (if there is one)."""
    end = len(data)
    for back in range(1, min(4, end) + 1):
        pos = end - back
        byte = data[pos]
        if 0x80 <= byte <= 0xBF:        # continuation byte: keep looking for the lead
            continue
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if pos + need > end and (pos > 0 or allow_empty):
                return pos
        break
    return end
