"""Extraction speed per stage for a 10 s clip (Megamind.avi cut to 10 s), after warm-up.

Stages: decode (ffmpeg demux + resample to 16 kHz), ASR (Whisper tiny.en, faster-whisper int8),
text (MiniLM token features, cache off), audio (librosa MFCC + pyin + chroma + RMS) and vision
(ffmpeg frame decoding + MediaPipe face landmarker at --fps). One warm-up pass, then the median
of --repeats passes. Real-time factor = clip seconds / total seconds (> 1 is faster than real time).

    .venv/bin/python benchmarks/extract_speed.py            # writes benchmarks/results/extract_speed.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

MEDIA = Path(os.environ.get("MSALIGN_MEDIA") or Path.home() / ".cache" / "msalign" / "media")
MEGAMIND = MEDIA / "opencv-doc/usr/share/doc/opencv-doc/examples/data/Megamind.avi"
RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("decode", "asr", "text", "audio", "vision")


def one_pass(clip: Path, options, encoder) -> tuple[dict[str, float], str]:
    from msalign.extract.pipeline import extract_clip

    features = extract_clip(clip, options, missing="error")
    started = time.perf_counter()
    encoder.encode([features.transcript.text])
    seconds = dict(features.seconds)
    seconds["text"] = time.perf_counter() - started
    return seconds, features.transcript.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--fps", type=float, default=10.0, help="video frames analysed per second")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "extract_speed"))
    args = parser.parse_args()
    if not MEGAMIND.exists():
        raise SystemExit(f"{MEGAMIND} missing: run bash scripts/media_assets.sh")

    import torch

    from msalign.data.text_encoder import TextEncoder
    from msalign.extract.pipeline import ExtractOptions

    torch.set_num_threads(os.cpu_count() or 1)
    options = ExtractOptions(fps=args.fps)
    encoder = TextEncoder(options.text_encoder, options.max_text_len, cache=False)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip10.mp4"
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-t",
                str(args.seconds),
                "-i",
                str(MEGAMIND),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "aac",
                str(clip),
            ],
            check=True,
        )
        started = time.perf_counter()
        one_pass(clip, options, encoder)  # warm-up: model loading, numba compilation
        warmup = time.perf_counter() - started
        runs = []
        for _ in range(args.repeats):
            seconds, transcript = one_pass(clip, options, encoder)
            runs.append(seconds)
    median = {stage: statistics.median(r.get(stage, 0.0) for r in runs) for stage in STAGES}
    total = sum(median.values())
    result = {
        "clip_seconds": args.seconds,
        "fps": args.fps,
        "repeats": args.repeats,
        "cpu_cores": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine at the time
        "warmup_seconds": round(warmup, 2),
        "stage_seconds_median": {k: round(v, 3) for k, v in median.items()},
        "total_seconds": round(total, 3),
        "real_time_factor": round(args.seconds / total, 2),
        "transcript": transcript,
        "options": options.to_json(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Extraction speed: a 10 s clip, per stage",
        "",
        f"`python benchmarks/extract_speed.py` on {os.cpu_count()} CPU cores: Megamind.avi cut to {args.seconds:g} s, "
        f"video analysed at {args.fps:g} fps, median of {args.repeats} passes after one warm-up pass "
        f"({warmup:.1f} s, model loading and numba compilation). One process; stages run one after another. "
        f"Load average during the run: {os.getloadavg()[0]:.1f} (other jobs shared the cores).",
        "",
        "| stage | seconds | share |",
        "|---|---|---|",
    ]
    names = {
        "decode": "decode (ffmpeg audio to 16 kHz)",
        "asr": "ASR (Whisper tiny.en, int8)",
        "text": "text (MiniLM tokens)",
        "audio": "audio (librosa MFCC, pyin f0, chroma, RMS)",
        "vision": "vision (frame decoding + MediaPipe face landmarker)",
    }
    lines.extend(f"| {names[stage]} | {median[stage]:.2f} | {100 * median[stage] / total:.0f}% |" for stage in STAGES)
    lines += [
        f"| **total** | **{total:.2f}** | |",
        "",
        f"Real-time factor {args.seconds / total:.1f}x: "
        f"{'faster' if total < args.seconds else 'SLOWER'} than real time.",
        "",
        f'Transcript: "{transcript}"',
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
