#!/usr/bin/env bash
# libqcop's tests: build and install the C library with cargo-c into a temporary prefix,
# compile the C test suite and the C examples against it through pkg-config, and run the
# suite against a real qcopd three times: plain, under AddressSanitizer and
# UndefinedBehaviorSanitizer, and under valgrind memcheck (no leak allowed). Also: the header
# compiles as C++17 without warnings, the static library links, no daemon code is linked in,
# `unsafe` stays in capi/src/ffi, and the exported symbols match capi/abi/libqcop.so.0.symbols.
# Usage: bash capi/tests/run.sh   (from .ci/test; CI=true turns a missing tool into a failure)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

need() {
    if [ "${CI:-}" = "true" ]; then echo "FAIL: $1 cannot run: $2"; exit 1; fi
    echo "SKIPPED: $1 ($2)"; exit 0
}

if ! command -v cargo-cinstall >/dev/null || ! command -v valgrind >/dev/null \
    || ! command -v pkg-config >/dev/null || ! command -v g++ >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        echo "== cargo-c, valgrind, pkg-config and g++ (Debian packages)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo-c valgrind pkg-config g++ >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo-c valgrind pkg-config g++ >/dev/null; }
    fi
fi
for tool in cargo-cinstall valgrind pkg-config gcc g++ nm; do
    command -v "$tool" >/dev/null || need "C API tests" "$tool is missing (apt-get install cargo-c valgrind pkg-config g++)"
done

# Debian bookworm's cargo-c (0.9.14) carries a cargo of its own that only knows the git
# index of crates.io; these switch it to the sparse index, the one cargo itself uses.
export CARGO_REGISTRIES_CRATES_IO_PROTOCOL=sparse CARGO_UNSTABLE_SPARSE_REGISTRY=true
export __CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS=nightly

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dest="$work/dest"

echo "== libqcop: cargo cinstall (profile release-capi) into a temporary prefix"
# Its own target directory: cargo-c writes the prefix into qcop.pc when it builds.
CARGO_TARGET_DIR=target/capi cargo cinstall --locked -p qcop-capi --profile release-capi \
    --prefix /usr --libdir /usr/lib --destdir "$dest" 2>&1 |
    grep -v "unused manifest key: lints" | tail -3
cargo build --locked --bin qcopd --bin qcop 2>&1 | tail -1
bin=target/debug
export PKG_CONFIG_PATH="$dest/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest"
export LD_LIBRARY_PATH="$dest/usr/lib"
flags=(-std=c11 -Wall -Wextra -Werror -O1 -g)
cflags="$(pkg-config --cflags qcop)"
libs="$(pkg-config --libs qcop)"
echo "pkg-config --cflags --libs qcop: $cflags $libs"

echo "== installed files, soname, symbols"
(cd "$dest" && find . -type f -o -type l | sort)
soname="$(readelf -d "$dest/usr/lib/libqcop.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"
[ "$soname" = libqcop.so.0 ] || { echo "FAIL: soname is '$soname', not libqcop.so.0"; exit 1; }
[ -f "$dest/usr/lib/libqcop.a" ] && [ -f "$dest/usr/include/qcop.h" ] || { echo "FAIL: libqcop.a or qcop.h not installed"; exit 1; }
nm -D --defined-only "$dest/usr/lib/libqcop.so" | awk '{ print $3 }' | sort >"$work/symbols"
if ! diff -u capi/abi/libqcop.so.0.symbols "$work/symbols"; then
    echo "FAIL: the exported symbols differ from capi/abi/libqcop.so.0.symbols (above): a symbol"
    echo "      that disappears or changes needs a new soname; a new one is added to the list"
    exit 1
fi
echo "exported symbols match capi/abi/libqcop.so.0.symbols ($(wc -l <"$work/symbols") symbols)"
# Every function is documented with an example in the header.
header="$dest/usr/include/qcop.h"
functions="$(grep -c '^[a-z].*[ *]qcop_[a-z_]*(' "$header")"
examples="$(grep -c '^// ```c' "$header")"
[ "$functions" = "$(wc -l <"$work/symbols")" ] && [ "$examples" = "$functions" ] ||
    { echo "FAIL: qcop.h declares $functions functions with $examples examples"; exit 1; }
# The daemon stays out: qcop is built for libqcop without its daemon feature.
if cargo tree --locked -p qcop-capi -e features -i qcop 2>/dev/null | grep -q 'feature "daemon"'; then
    echo "FAIL: libqcop links the qcop crate with its daemon feature"; exit 1
fi
if grep -rn 'unsafe *{' capi/src --include=*.rs | grep -v '^capi/src/ffi/' | grep -v '^[^:]*:[0-9]*: *//'; then
    echo "FAIL: unsafe blocks outside capi/src/ffi"; exit 1
fi

echo "== the header as C++17 (-Wall -Wextra -Werror) and as C11 (-Wpedantic)"
printf '#include <qcop.h>\nint main() { qcop_conn *c = nullptr; qcop_disconnect(c); return 0; }\n' >"$work/h.cpp"
g++ -std=c++17 -Wall -Wextra -Werror $cflags -c "$work/h.cpp" -o "$work/h.o"
printf '#include <qcop.h>\nint main(void) { return qcop_error_name(0)[0] == 0; }\n' >"$work/h.c"
gcc -std=c11 -Wall -Wextra -Wpedantic -Werror $cflags "$work/h.c" -o "$work/h" $libs && "$work/h"

echo "== the C examples (examples/c)"
for src in examples/c/*.c; do
    gcc "${flags[@]}" $cflags "$src" -o "$work/$(basename "$src" .c)" $libs
done
echo "built: $(cd examples/c && ls ./*.c | tr '\n' ' ')"
# One statically linked: libqcop.a through pkg-config --static.
gcc "${flags[@]}" $cflags examples/c/subscriber.c -o "$work/subscriber-static" \
    "$dest/usr/lib/libqcop.a" $(pkg-config --libs-only-l --static qcop | sed 's/-lqcop//')
echo "statically linked subscriber: $(stat -c %s "$work/subscriber-static") bytes"

run_suite() {
    local name="$1"; shift
    local dir="$work/run-$name"; mkdir -p "$dir"
    echo "== C test suite ($name)"
    # A watchdog: a hung test fails the run instead of stalling CI.
    timeout 300 "$@" "$bin/qcopd" "$bin/qcop" "$dir"
}

gcc "${flags[@]}" $cflags capi/tests/test_capi.c -o "$work/test_capi" $libs -lpthread
run_suite plain "$work/test_capi"

gcc "${flags[@]}" -fsanitize=address,undefined -fno-sanitize-recover=undefined $cflags \
    capi/tests/test_capi.c -o "$work/test_capi_asan" $libs -lpthread
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    run_suite asan-ubsan "$work/test_capi_asan"

# valgrind: every block the library allocated is freed (definite, indirect and possible
# leaks fail; child processes are not followed).
run_suite valgrind valgrind --quiet --error-exitcode=3 --leak-check=full \
    --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
    "$work/test_capi"
