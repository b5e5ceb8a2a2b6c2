#!/usr/bin/env bash
# libqcop's benchmark: round trips (send, then receive the echo of another process) through
# the C API against the same exchange through the Rust API, in one run, against one release
# qcopd. The Rust API is the floor: the figure is the ratio C / Rust (issue budget: 1.05).
# Then broadcast: one sender, 4 subscriber processes, time per message sent until every
# subscriber has all of them (BCAST messages). Runs ROUNDS alternating pairs per placement:
# all processes on CPU 0 (same core), or free.
# Usage: bash capi/bench/run.sh [COUNT] [ROUNDS] [BCAST]    (figures in docs/BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
count="${1:-20000}" rounds="${2:-5}" bcast="${3:-5000}"
export CARGO_REGISTRIES_CRATES_IO_PROTOCOL=sparse CARGO_UNSTABLE_SPARSE_REGISTRY=true
export __CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS=nightly
work="$(mktemp -d)"
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

CARGO_TARGET_DIR=target/capi cargo cinstall --locked -p qcop-capi --profile release-capi \
    --prefix /usr --libdir /usr/lib --destdir "$work/dest" >/dev/null 2>&1
cargo build --locked --release -p qcop --bin qcopd 2>&1 | tail -1
cargo build --locked --release -p qcop-capi --example rust_rr 2>&1 | tail -1
export PKG_CONFIG_PATH="$work/dest/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$work/dest"
export LD_LIBRARY_PATH="$work/dest/usr/lib"
# shellcheck disable=SC2046
gcc -std=c11 -O2 $(pkg-config --cflags qcop) capi/bench/rr.c -o "$work/rr" $(pkg-config --libs qcop)

sock="$work/qcopd.sock"
target/release/qcopd --socket "$sock" 2>/dev/null &
pid=$!
while [ ! -S "$sock" ]; do sleep 0.05; done

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v c="$1" -v r="$2" 'BEGIN { printf "%.3f", c / r }'; }
for placement in same-core free; do
    wrap=()
    [ "$placement" = same-core ] && wrap=(taskset -c 0)
    for kind in "round trip" "broadcast to 4"; do
        args=("$count")
        [ "$kind" = "broadcast to 4" ] && args=("$bcast" 4)
        : >"$work/c" && : >"$work/rust"
        for _ in $(seq "$rounds"); do
            "${wrap[@]}" target/release/examples/rust_rr "$sock" "${args[@]}" >>"$work/rust"
            "${wrap[@]}" "$work/rr" "$sock" "${args[@]}" >>"$work/c"
        done
        c="$(median <"$work/c")" rust="$(median <"$work/rust")"
        printf '%-9s %-14s C API %6d ns, Rust API %6d ns, ratio %s (median of %d runs)\n' \
            "$placement" "$kind:" "$c" "$rust" "$(ratio "$c" "$rust")" "$rounds"
    done
done
