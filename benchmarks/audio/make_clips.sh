#!/bin/sh
# Regenerate the caller simulator's speech clips: eSpeak NG (en-us, no word gap) -> SoX:
# 8 kHz mono G.711 mu-law WAV, leading and trailing silence trimmed, peak at -3 dBFS, no dither
# (-D), so the output is the same on every run.
# The table of file names, speeds and texts lives in ../clips.py (CLIPS).
# Needs: espeak-ng, sox, python3. Then check: python3 ../clips.py check (needs webrtcvad, numpy).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$here/../clips.py" table | while IFS='|' read -r name speed text; do
    espeak-ng -v en-us -s "$speed" -g 0 -w "$tmp/raw.wav" "$text"
    sox -D "$tmp/raw.wav" -r 8000 -c 1 -e u-law "$here/$name" \
        silence 1 0.01 1% reverse silence 1 0.01 1% reverse gain -n -3
    echo "$name: $(soxi -D "$here/$name") s  $text"
done
