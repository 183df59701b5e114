#!/usr/bin/env bash
# Makes real HLS and DASH output with Debian's ffmpeg, from a tiny synthetic source
# (64x48 test pattern at 10 fps and a sine tone, 3 s, one-second segments): the playlists
# cdnsign's playlist tests sign, and the media the end-to-end test serves.
#
#   bash scripts/gen_playlist_fixtures.sh            # refresh tests/fixtures/playlists/ffmpeg/
#   bash scripts/gen_playlist_fixtures.sh OUT_DIR    # everything (media too) into OUT_DIR
#
# Layout under OUT_DIR (each a directory a CDN would serve):
#   fmp4/stream.m3u8       HLS, fMP4 segments, EXT-X-MAP init segment
#   aes/stream.m3u8        HLS, MPEG-TS segments encrypted with AES-128, EXT-X-KEY (keys/enc.key)
#   master/master.m3u8     HLS master: an audio rendition (EXT-X-MEDIA) and two video
#                          variants, every media playlist one file with EXT-X-BYTERANGE
#   dash/manifest.mpd      DASH, SegmentTemplate with $RepresentationID$ and $Number%05d$
#   dash-list/manifest.mpd DASH, SegmentList of SegmentURLs with an Initialization
# Takes about a second. Needs ffmpeg (scripts/setup.sh installs it).
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
command -v ffmpeg >/dev/null || { echo "gen_playlist_fixtures: ffmpeg missing; run scripts/setup.sh" >&2; exit 1; }

if [[ $# -ge 1 ]]; then
    OUT="$1"
    COPY_FIXTURES=0
else
    OUT="$(mktemp -d)"
    trap 'rm -rf "$OUT"' EXIT
    COPY_FIXTURES=1
fi
mkdir -p "$OUT"/{fmp4,aes/keys,master,dash,dash-list}

FF=(ffmpeg -nostdin -hide_banner -loglevel error -y)
VIDEO=(-f lavfi -i "testsrc=size=64x48:rate=10")
AUDIO=(-f lavfi -i "sine=frequency=440:sample_rate=8000")
# Bit-exact, single-threaded encodes: the same playlists on every run.
VENC=(-c:v libx264 -preset ultrafast -g 10 -threads 1 -fflags +bitexact -flags +bitexact)
AENC=(-c:a aac -b:a 16k -ac 1)
T=(-t 3)

(
    cd "$OUT/fmp4"
    "${FF[@]}" "${VIDEO[@]}" "${AUDIO[@]}" "${T[@]}" "${VENC[@]}" "${AENC[@]}" \
        -f hls -hls_time 1 -hls_playlist_type vod -hls_segment_type fmp4 \
        -hls_fmp4_init_filename init.mp4 -hls_segment_filename 'seg_%03d.m4s' stream.m3u8
)
(
    cd "$OUT/aes"
    # A fixed TEST key: the end-to-end test serves it only to signed requests.
    printf '0123456789abcdef' >keys/enc.key
    printf 'keys/enc.key\n%s\n00112233445566778899aabbccddeeff\n' "$PWD/keys/enc.key" >keyinfo
    "${FF[@]}" "${VIDEO[@]}" "${T[@]}" "${VENC[@]}" \
        -f hls -hls_time 1 -hls_playlist_type vod -hls_key_info_file keyinfo \
        -hls_segment_filename 'seg_%03d.ts' stream.m3u8
    rm -f keyinfo
)
(
    cd "$OUT/master"
    "${FF[@]}" "${VIDEO[@]}" "${AUDIO[@]}" "${T[@]}" \
        -filter_complex "[0:v]split=2[hi][v2];[v2]scale=32:24[lo]" \
        -map "[hi]" -map "[lo]" -map 1:a "${VENC[@]}" "${AENC[@]}" \
        -f hls -hls_time 1 -hls_playlist_type vod -hls_flags single_file \
        -var_stream_map "a:0,agroup:aud,name:audio v:0,agroup:aud,name:hi v:1,agroup:aud,name:lo" \
        -master_pl_name master.m3u8 'media_%v.m3u8'
)
(
    cd "$OUT/dash"
    "${FF[@]}" "${VIDEO[@]}" "${AUDIO[@]}" "${T[@]}" "${VENC[@]}" "${AENC[@]}" \
        -f dash -seg_duration 1 manifest.mpd
)
(
    cd "$OUT/dash-list"
    "${FF[@]}" "${VIDEO[@]}" "${T[@]}" "${VENC[@]}" \
        -f dash -seg_duration 1 -use_template 0 -use_timeline 0 manifest.mpd
)

if ((COPY_FIXTURES)); then
    DEST="$REPO_ROOT/tests/fixtures/playlists/ffmpeg"
    mkdir -p "$DEST"
    cp "$OUT/fmp4/stream.m3u8" "$DEST/fmp4.m3u8"
    cp "$OUT/aes/stream.m3u8" "$DEST/aes128.m3u8"
    cp "$OUT/master/master.m3u8" "$DEST/master.m3u8"
    cp "$OUT/master/media_hi.m3u8" "$DEST/byterange.m3u8"
    cp "$OUT/dash/manifest.mpd" "$DEST/dash-template.mpd"
    cp "$OUT/dash-list/manifest.mpd" "$DEST/dash-list.mpd"
    echo "gen_playlist_fixtures: wrote $(ls "$DEST" | wc -l) playlists to $DEST ($(ffmpeg -version | head -n1 | cut -d' ' -f1-3))"
else
    echo "gen_playlist_fixtures: media and playlists in $OUT"
fi
