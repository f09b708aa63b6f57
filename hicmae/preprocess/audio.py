"""Audio to the 16 kHz mono 16-bit wav that training reads.

Why FFmpeg's resampler (through PyAV) and not ``hicmae.data.media.load_audio``: the original made its wavs
with the ``ffmpeg`` command (``-vn -acodec pcm_s16le -ac 1 -ar 16000``, REFERENCE.md 9.1), i.e. with this
very resampler and downmix; and it streams, so an hour of audio never sits in memory as floats. Any
container FFmpeg reads works: a video's own track, VoxCeleb2's ``.m4a``, a wav at another rate.
"""

from __future__ import annotations

import os

import numpy as np

from hicmae.errors import DataError
from hicmae.preprocess.video import ffmpeg_message as _short

SAMPLE_RATE = 16000


class NoAudioError(DataError):
    """The source has no audio track, or the track holds no samples."""


def extract_wav(source: str, dest: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> float:
    """Write the first audio track of ``source`` to ``dest`` as mono 16-bit PCM wav at ``sample_rate``;
    returns its length in seconds. Raises NoAudioError or DataError naming ``source``."""
    import av
    import soundfile as sf

    from hicmae.data.media import check_file

    try:
        check_file(source)
    except DataError as err:  # a missing or empty audio file is a clip without audio
        raise NoAudioError(err.path, err.reason) from None
    try:
        container = av.open(source)
    except Exception as exc:
        raise DataError(source, f"cannot open to read its audio ({_short(exc)})") from None
    with container:
        if not container.streams.audio:
            raise NoAudioError(source, "has no audio track (give the audio as a separate file in the manifest's "
                                       "'audio' column)")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        samples = 0
        with sf.SoundFile(os.fspath(dest), "w", samplerate=sample_rate, channels=1, subtype="PCM_16",
                          format="WAV") as out:
            def write(frames) -> None:
                nonlocal samples
                for f in frames:
                    data = f.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                    out.write(data)
                    samples += len(data)

            try:
                for frame in container.decode(stream):
                    write(resampler.resample(frame))
                write(resampler.resample(None))  # what the resampler still holds
            except Exception as exc:
                raise DataError(source, f"cannot decode the audio track after {samples / sample_rate:.2f} s "
                                        f"({_short(exc)}); the file may be truncated") from None
    if samples == 0:
        raise NoAudioError(source, "has an audio track with no samples")
    return samples / sample_rate
