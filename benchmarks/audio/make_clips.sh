#!/bin/sh
# Regenerate the caller simulator's speech clips -> SoX: 8 kHz mono G.711 mu-law WAV, leading
# and trailing silence trimmed, peak at -3 dBFS, no dither (-D).
#   espeak clips (the benchmark turns): eSpeak NG, en-us, no word gap; the same on every run.
#   piper clips (the demo caller): Piper's joe voice pitched up 4.5 semitones, so the caller
#   does not sound like the agent; Piper samples noise, so a rerun differs slightly.
# The table of file names, voices, speeds and texts lives in ../clips.py (CLIPS).
# Needs: espeak-ng, sox, and python3 from the project's venv (Piper). Then check:
# python3 ../clips.py check (needs webrtcvad, numpy).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$here/../clips.py" table | while IFS='|' read -r name speed voice text; do
    if [ "$voice" = piper ]; then
        python3 "$here/../clips.py" piper "$text" "$tmp/raw.wav"
        effect="pitch 450"
        floor=4%  # trim Piper's soft onsets, which webrtcvad does not call speech
    else
        espeak-ng -v en-us -s "$speed" -g 0 -w "$tmp/raw.wav" "$text"
        effect=""
        floor=1%
    fi
    # shellcheck disable=SC2086 # $effect is zero or more SoX words
    sox -D "$tmp/raw.wav" -r 8000 -c 1 -e u-law "$here/$name" $effect \
        silence 1 0.01 "$floor" reverse silence 1 0.01 "$floor" reverse gain -n -3
    echo "$name: $(soxi -D "$here/$name") s  $text"
done
