#!/bin/sh
# One publisher, UDP and TCP viewers of its live path: the server's memory
# per viewer. rtpload publishes the benchmark movie (looped) and its viewers
# join at --ramp per second; a second rtpload adds the TCP viewers. The
# server's resident and anonymous memory are read before the viewers and
# while all of them play.
#
#   perf/live-2000.sh [UDP_VIEWERS] [TCP_VIEWERS]     (default 1000 1000)
#
# Environment: BIN (release binaries, default target/release), MOVIE
# (default perf/data/loop-10min-300k.mp4, which capacity-bench makes),
# PORT (default 28554), HOLD (seconds all viewers play, default 20),
# RAMP (viewers a second per rtpload, default 200), OUT (default
# perf/live-2000).
set -eu
cd "$(dirname "$0")/.."
UDP=${1:-1000}
TCP=${2:-1000}
BIN=${BIN:-target/release}
MOVIE=${MOVIE:-perf/data/loop-10min-300k.mp4}
PORT=${PORT:-28554}
HOLD=${HOLD:-20}
RAMP=${RAMP:-200}
OUT=${OUT:-perf/live-2000}
rm -rf "$OUT"
mkdir -p "$OUT/media"
ln -sf "$(realpath "$MOVIE")" "$OUT/media/movie.mp4"

anon() { awk '/^Anonymous:/ {print $2}' "/proc/$1/smaps_rollup"; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

ulimit -n "$(ulimit -Hn)"
"$BIN/streamalot" serve --media "$OUT/media" --bind 127.0.0.1 --rtsp-port "$PORT" \
    --shards 1 --rtp-ports 40000-40099 --max-connections 0 --max-sessions 0 \
    --session-timeout 120 --access-log /dev/null --publish /live=bench:bench \
    >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
sleep 1

# The viewers' whole life: ramp, hold, and a margin.
RAMP_SECS=$(( (UDP > TCP ? UDP : TCP) / RAMP + 1 ))
DURATION=$(( RAMP_SECS + HOLD ))
# The publisher (with one UDP viewer of its own) first, alone.
"$BIN/rtpload" --publish "$OUT/media/movie.mp4" --loop \
    "rtsp://bench:bench@127.0.0.1:$PORT/live/movie" \
    --sessions 1 --duration "$((DURATION + RAMP_SECS + 10))" --transport udp --quiet --out "$OUT/publisher" \
    >"$OUT/publisher.out" 2>&1 &
PUBLISHER=$!
sleep 5
RSS0=$(rss $SERVER); ANON0=$(anon $SERVER)
echo "publisher and one viewer: RSS $RSS0 KiB, anonymous $ANON0 KiB"
LOADS=""
for t in udp tcp; do
    n=$UDP; [ $t = tcp ] && n=$TCP
    [ "$n" -gt 0 ] || continue
    "$BIN/rtpload" "rtsp://127.0.0.1:$PORT/live/movie" --sessions "$n" --ramp "$RAMP" \
        --duration "$DURATION" --transport $t --quiet --out "$OUT/$t" \
        >"$OUT/$t.out" 2>&1 &
    LOADS="$LOADS $!"
done
sleep $(( RAMP_SECS + HOLD / 2 ))
RSS1=$(rss $SERVER); ANON1=$(anon $SERVER)
VIEWERS=$(( UDP + TCP ))
echo "all playing: RSS $RSS1 KiB, anonymous $ANON1 KiB"
echo "per viewer: RSS $(( (RSS1 - RSS0) * 1024 / VIEWERS )) B, anonymous $(( (ANON1 - ANON0) * 1024 / VIEWERS )) B ($VIEWERS viewers)"
for p in $LOADS $PUBLISHER; do wait $p || echo "rtpload $p: exit $?"; done
for f in "$OUT"/publisher.out "$OUT"/udp.out "$OUT"/tcp.out; do
    [ -f "$f" ] && { echo "== $f"; grep -E "sessions|lost|PASS|FAIL|lateness" "$f" | head -8; }
done
