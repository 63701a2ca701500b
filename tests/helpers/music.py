"""Audio files for the music tests: short silent WAV and MP3 files with ID3 tags, a library of many."""

from __future__ import annotations

import wave
from pathlib import Path

from mutagen.easyid3 import EasyID3
from mutagen.id3 import TCON, TIT2, TPE1
from mutagen.wave import WAVE

# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz frame header; zero side info decodes as silence.
MP3_FRAME = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(417 - 4)


def make_wav(path: Path, seconds: float = 0.5, **tags: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * int(8000 * seconds))
    if tags:
        audio = WAVE(path)
        audio.add_tags()
        for frame, key in ((TIT2, "title"), (TPE1, "artist"), (TCON, "genre")):
            if key in tags:
                audio.tags.add(frame(encoding=3, text=tags[key]))
        audio.save()
    return path


def make_mp3(path: Path, frames: int = 40, **tags: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(MP3_FRAME * frames)
    if tags:
        audio = EasyID3()
        for key, value in tags.items():
            audio[key] = value
        audio.save(path)
    return path


def make_library(root: Path, count: int, prefix: str = "Artist") -> list[Path]:
    """`count` tagged WAV files (a twentieth of a second each) under root/many/."""
    return [
        make_wav(root / "many" / f"{i:04d}.wav", seconds=0.05, title=f"Song {i}", artist=f"{prefix} {i}")
        for i in range(count)
    ]
