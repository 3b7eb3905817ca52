#!/usr/bin/env bash
# One entry point for a fresh Debian 12 / Python 3.11 machine.
#
#   ./dev.sh run    set everything up, then run loa on its embedded defaults
#   ./dev.sh test   set everything up, then run the whole test suite (ruff, mypy, pytest)
#   ./dev.sh setup  only set up (system packages, .venv, loa installed in it)
#   ./dev.sh bench NAME [ARGS]   set up, then `loa bench NAME ARGS`
#
# System packages are installed with apt-get (through sudo when not root) only when missing.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${LOA_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root to run: $*  (install sudo or run as root)"; return 1; fi
}

APT_UPDATED=0
apt_install() {
    # apt_install PKG... : install the Debian packages that are not installed yet.
    local missing=()
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || { say "apt-get not found; install by hand: ${missing[*]}"; return 1; }
    say "installing system packages: ${missing[*]}"
    if [ $APT_UPDATED = 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_system() {
    # libopus0: the Opus codec (opuslib binds it). ffmpeg: an independent RTP receiver for interop tests.
    # fonts-dejavu-core: DejaVu Sans, the e-board's font (every Vietnamese letter with its marks).
    local pkgs=(libopus0 ffmpeg ca-certificates fonts-dejavu-core)
    # postgresql: the tests start a throwaway server of their own (initdb/pg_ctl), beside the SQLite default.
    # nftables: the kernel fault test drops datagrams in a network namespace of its own (tc netem where present).
    if [ "${1:-}" = test ]; then pkgs+=(postgresql nftables); fi
    # GStreamer: a peer of the fan-out benchmark (multiudpsink), for `./dev.sh bench` only.
    if [ "${1:-}" = bench ]; then pkgs+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good); fi
    # GStreamer from Python (PyGObject): the latency benchmark's peer (rtpjitterbuffer), for its tests too.
    if [ "${1:-}" = bench ] || [ "${1:-}" = test ]; then
        pkgs+=(python3-gi gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good); fi
    # Debian's own python3 needs python3-venv for `python3 -m venv` (ensurepip is split out of it).
    if [ "$(command -v "$PY")" = /usr/bin/python3 ] || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
        pkgs+=(python3-venv)
    fi
    apt_install "${pkgs[@]}"
}

setup_python() {
    local stamp="$VENV/.loa-installed"
    local want
    want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$PY" -m venv "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing loa and its Python dependencies into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$VENV/bin/python" -m pip install -q -e ".[dev]"
        echo "$want" > "$stamp"
    fi
}

setup() { setup_system "${1:-}"; setup_python; }

cmd=${1:-run}; shift || true
case "$cmd" in
    setup) setup ;;
    run)
        setup
        say "starting loa serve: API and event stream on http://127.0.0.1:8080, devices on udp 127.0.0.1:4433,"
        say "data in ./loa-data (the first start prints the administrator's one-time password); Ctrl-C to stop"
        exec "$VENV/bin/loa" serve --data-dir loa-data "$@"
        ;;
    test)
        setup test
        say "ruff"
        "$VENV/bin/ruff" check .
        say "mypy"
        "$VENV/bin/mypy" -p loa
        say "pytest"
        "$VENV/bin/python" -m pytest "$@"
        ;;
    bench)
        setup bench
        exec "$VENV/bin/loa" bench "$@"
        ;;
    *) say "usage: ./dev.sh [run|test|setup|bench NAME]"; exit 2 ;;
esac
