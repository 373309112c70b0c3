"""`ocula transcribe ARTIFACT AUDIO.wav`: run a Whisper artifact on a WAV file on this host.

The WAV is mixed down to mono and resampled to the model's rate (logged). With --vad, the
Silero VAD artifact finds the speech, silence is skipped and windows are cut at pauses; without
it, the audio is decoded in 30 s windows. A window shorter than 30 s is padded to the full
window unless --trim is given. --json prints segments, token ids, timings and the real-time
factor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ocula.argtypes import integer, label


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "transcribe",
        parents=[common],
        help="run an ASR artifact on a WAV file on this host",
        description="Transcribe (or translate to English) a WAV file with an ASR artifact "
        "made by 'ocula export asr'.",
    )
    p.add_argument("artifact", type=Path, metavar="ARTIFACT", help="ASR artifact folder")
    p.add_argument("audio", type=Path, metavar="AUDIO.wav", help="a PCM WAV file")
    p.add_argument("--vad", type=Path, metavar="VAD_ARTIFACT", help="VAD artifact folder")
    p.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    p.add_argument("--language", type=label, metavar="CODE", help="language code (default: detect)")
    p.add_argument("--max-new-tokens", type=integer(1, 1 << 16), default=None, metavar="N")
    p.add_argument("--threads", type=integer(1, 1024), default=None, metavar="N")
    p.add_argument("--board", help="board profile for threads (default: host)")
    p.add_argument(
        "--trim",
        action="store_true",
        help="encode audio shorter than a window from the frames it needs, not padded to the "
        "full window: faster, but the tokens are those of the trimmed window (Whisper was "
        "trained on full windows; the default pads, as transformers does)",
    )
    p.add_argument(
        "--guard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="retry a window whose text loops or whose tokens are unsure (compression ratio, "
        "log-probability and no-speech thresholds with temperature fallback, as openai/whisper "
        "does); default: on with --trim, off otherwise (the untrimmed greedy tokens then equal "
        "transformers')",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    p.set_defaults(func=_transcribe)


def _transcribe(args: argparse.Namespace) -> int:
    from runtime.engine.asr import Guard, Whisper
    from runtime.engine.audio import read_wav

    profile = None
    if args.board:
        from board import profiles

        profile = profiles.find(args.board)
    asr = Whisper.from_artifact(args.artifact, profile, threads=args.threads, trim=args.trim)
    audio = read_wav(args.audio, asr.sample_rate)
    segments = None
    if args.vad:
        from runtime.engine.vad import Vad, speech_segments

        vad = Vad.from_artifact(args.vad, profile=profile)
        segments = [(s.start, s.end) for s in speech_segments(vad, audio)]
    result = asr.transcribe(
        audio,
        task=args.task,
        language=args.language,
        segments=segments,
        max_new_tokens=args.max_new_tokens,
        guard=Guard() if (args.trim if args.guard is None else args.guard) else None,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "text": result.text,
                    "language": result.language,
                    "task": args.task,
                    "segments": result.segments,
                    "token_ids": result.tokens,
                    "audio_s": round(result.audio_s, 3),
                    "timings": {
                        "features_s": round(result.features_s, 4),
                        "encoder_s": round(result.encoder_s, 4),
                        "decoder_s": round(result.decoder_s, 4),
                        "decoder_ms_per_token": round(result.decoder_ms_per_token, 3),
                        "total_s": round(result.total_s, 4),
                    },
                    "rtf": round(result.rtf, 4),
                    "vad": bool(args.vad),
                },
                ensure_ascii=False,
            )
        )
    else:
        print(result.text)
    return 0
