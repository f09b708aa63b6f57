"""Exceptions raised by hicmae. Each message names the file (when there is one) and what is wrong."""

from __future__ import annotations

import os


class HiCMAEError(Exception):
    """Base class of every error hicmae raises on purpose."""


class ConfigError(HiCMAEError, ValueError):
    """A configuration value is invalid or inconsistent."""


class _PathError(HiCMAEError):
    """An error about one file: ``Error(path, reason)``, shown as ``<path>: <reason>``.

    With ``option`` (the setting the path came from, e.g. ``data.val_manifest``) it reads
    ``<option>: <path> <reason>``, so ``reason`` is then a predicate such as ``does not exist``.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, option: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        self.option = option
        if option:
            message = f"{option}: {self.path} {reason}" if self.path else f"{option}: {reason}"
        else:
            message = f"{self.path}: {reason}" if self.path else reason
        super().__init__(message)

    def __reduce__(self):
        # Picklable with every argument, so an error raised in a DataLoader worker keeps its type.
        return type(self), (self.path, self.reason, self.option)


class DataError(_PathError):
    """A media file or manifest cannot be used: ``DataError(path, reason)``."""


class CheckpointError(_PathError):
    """A checkpoint file cannot be read safely, or does not fit the model."""


# ---------------------------------------------------------------------------------------------- sniffing
# What a file is, from its first bytes, so that a refusal can say "it looks like text" instead of
# repeating a decoder's internal message. Only used to word errors; nothing is accepted on this basis.
ZIP, PICKLE, SAFETENSORS, TEXT, EMPTY = ("a zip archive", "a Python pickle", "a safetensors file", "text",
                                         "an empty file (0 bytes)")
MP4 = "an MP4/MOV file"
# What describe_content may call a file that FFmpeg can still read as a video.
VIDEO_KINDS = frozenset({MP4, "a Matroska/WebM video", "an FLV video", "an AVI video", "a GIF image",
                         "an Ogg media file"})
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", ZIP),
    (b"PK\x05\x06", ZIP),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"fLaC", "a FLAC audio file"),
    (b"ID3", "an MP3 audio file"),
    (b"OggS", "an Ogg media file"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (b"FLV", "an FLV video"),
)


def describe_content(path: str | os.PathLike) -> str | None:
    """What the file at ``path`` looks like ("text", "an HTML page", "a zip archive", "a Python pickle",
    "a safetensors file", an image, audio or video format...), or None when its first bytes say nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if not head:
        return EMPTY
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"AVI "):
        return "a WAV audio file" if head[8:12] == b"WAVE" else "an AVI video"
    if head[4:8] == b"ftyp":
        return MP4
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # PROTO opcode, protocols 2-5
        return PICKLE
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if len(head) > 8 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return SAFETENSORS
    text = _as_text(head)
    if text is None:
        return None
    if text.startswith("version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (fetch it with `git lfs pull`)"
    if text.lstrip().lower().startswith(("<!doctype html", "<html")):
        return "an HTML page (a download that returned a web page?)"
    return TEXT


def _as_text(head: bytes) -> str | None:
    """``head`` decoded as UTF-8 when it is printable text (the last character may be cut off)."""
    if b"\x00" in head:
        return None
    for cut in range(4):  # the 1024-byte window may end inside a multi-byte character
        try:
            text = head[:len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    text = text.removeprefix("\ufeff")
    if all(c.isprintable() or c in "\t\n\r\f\v" for c in text):
        return text
    return None
