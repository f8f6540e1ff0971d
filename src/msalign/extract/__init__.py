"""Raw media -> features: ffmpeg decoding, Whisper transcripts, librosa audio, MediaPipe face features.

Needs the ``media`` extra (``bash scripts/setup.sh dev,media``) and ffmpeg. The entry points are
:func:`msalign.extract.pipeline.extract` (a feature directory) and
:func:`msalign.extract.pipeline.extract_clip` (one file, in memory).
"""
