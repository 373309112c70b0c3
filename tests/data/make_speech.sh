#!/bin/sh
# Makes the speech fixtures in this folder (run once; the WAVs are committed).
# Needs espeak-ng and sox (Debian: apt-get install espeak-ng sox).
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() {  # say NAME TEXT: 16 kHz mono 16-bit speech with espeak-ng's own silence trimmed away
    espeak-ng -v en-us -s 150 -w "$tmp/$1.raw.wav" "$2"
    sox "$tmp/$1.raw.wav" -r 16000 -c 1 -b 16 "$tmp/$1.wav" \
        silence 1 0.005 0.5% reverse silence 1 0.005 0.5% reverse
}
silence() {  # silence NAME SECONDS
    sox -n -r 16000 -c 1 -b 16 "$tmp/$1.wav" trim 0 "$2"
}
say one "The quick brown fox jumps over the lazy dog."
say two "Please turn on the kitchen lights."
silence s1 1.0
silence s2 1.5
silence s3 1.0
sox "$tmp/s1.wav" "$tmp/one.wav" "$tmp/s2.wav" "$tmp/two.wav" "$tmp/s3.wav" speech_padded.wav
cp "$tmp/one.wav" speech_short.wav
# The truth: where each spoken part starts and ends, in seconds, from the parts' lengths.
d1=$(soxi -D "$tmp/one.wav")
d2=$(soxi -D "$tmp/two.wav")
python3 - "$d1" "$d2" > speech_padded.json <<'PY'
import json, sys
d1, d2 = float(sys.argv[1]), float(sys.argv[2])
a0 = 1.0
a1 = a0 + d1
b0 = a1 + 1.5
b1 = b0 + d2
print(json.dumps({"sample_rate": 16000,
                  "segments": [[round(a0, 4), round(a1, 4)], [round(b0, 4), round(b1, 4)]],
                  "texts": ["The quick brown fox jumps over the lazy dog.",
                            "Please turn on the kitchen lights."]}, indent=1))
PY
