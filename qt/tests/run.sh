#!/usr/bin/env bash
# The Qt library's tests: install libqcop (cargo-c, profile release-capi: the build of
# capi/tests/run.sh is reused) into a staging root, build the library, its examples and
# its QtTest suite for Qt 5 and for Qt 6 (out of tree, target/qt/build-qt5 and -qt6),
# install both into the same root (they coexist), run each suite against a real qcopd
# (offscreen, no display), and build a program against each installed package with CMake
# (find_package) and with pkg-config.
# Usage: bash qt/tests/run.sh   (CI=true turns a missing tool or Qt into a failure)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

need() {
    if [ "${CI:-}" = "true" ]; then echo "FAIL: $1 cannot run: $2"; exit 1; fi
    echo "SKIPPED: $1 ($2)"; exit 0
}

packages="qtbase5-dev qt6-base-dev cmake pkg-config g++ cargo-c"
have_all() {
    command -v cmake >/dev/null && command -v pkg-config >/dev/null && command -v g++ >/dev/null &&
        command -v cargo-cinstall >/dev/null && pkg-config --exists Qt5Core Qt6Core Qt5Test Qt6Test 2>/dev/null
}
if ! have_all && [ "$(id -u)" = 0 ]; then
    echo "== Qt 5, Qt 6, CMake, cargo-c (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null; }
fi
have_all || need "Qt library tests" "Qt 5, Qt 6, cmake, pkg-config, g++ or cargo-c is missing (apt-get install $packages)"

# Debian bookworm's cargo-c: the sparse index, as in capi/tests/run.sh.
export CARGO_REGISTRIES_CRATES_IO_PROTOCOL=sparse CARGO_UNSTABLE_SPARSE_REGISTRY=true
export __CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS=nightly

root="$PWD/target/qt/root"
rm -rf "$root"
echo "== libqcop: cargo cinstall (profile release-capi) into $root"
CARGO_TARGET_DIR=target/capi cargo cinstall --locked -p qcop-capi --profile release-capi \
    --prefix /usr --libdir /usr/lib --destdir "$root" 2>&1 |
    grep -v "unused manifest key: lints" | tail -1
# The staged qcop.pc points into the staging root (no sysroot, which Qt's .pc files
# would get too).
sed -i "s|=/usr|=$root/usr|" "$root/usr/lib/pkgconfig/qcop.pc"
cargo build --locked --bin qcopd --bin qcop 2>&1 | tail -1
export PKG_CONFIG_PATH="$root/usr/lib/pkgconfig" LD_LIBRARY_PATH="$root/usr/lib"
export QCOP_BIN_DIR="$PWD/target/debug" QT_QPA_PLATFORM=offscreen
jobs="$(nproc 2>/dev/null || echo 1)"

for qt in 5 6; do
    build="target/qt/build-qt$qt"
    echo "== Qt $qt: library, examples, tests ($build)"
    cmake -S qt -B "$build" -DQCOP_QT_MAJOR=$qt -DQCOP_QT_BUILD_TESTS=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX="$root/usr" \
        -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_CXX_FLAGS="-Werror" >/dev/null
    cmake --build "$build" -j "$jobs" 2>&1 | grep -E "warning|error|Error" && exit 1
    cmake --install "$build" >/dev/null
    lib="$root/usr/lib/libqcop-qt$qt.so"
    soname="$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"
    [ "$soname" = "libqcop-qt$qt.so.0" ] || { echo "FAIL: soname of $lib is '$soname'"; exit 1; }
    # Only the C API is linked, never the protocol again: libqcop.so.0 is a dependency.
    readelf -d "$lib" | grep -q 'NEEDED.*\[libqcop.so.0\]' || { echo "FAIL: $lib does not link libqcop.so.0"; exit 1; }
    echo "installed: libqcop-qt$qt.so.0, qcop-qt$qt.pc, include/qcop-qt$qt/, lib/cmake/$([ $qt = 5 ] && echo QCopQt5 || echo QCop)/"

    echo "== Qt $qt: tst_qcop against qcopd"
    # A watchdog: a hung test fails the run instead of stalling CI.
    status=0
    QCOP_QT_PEER="$PWD/$build/tests/qcop-qt-peer" timeout 300 "$build/tests/tst_qcop" \
        >"$build/tst_qcop.log" 2>&1 || status=$?
    grep -E '^(FAIL|XPASS|Totals)|^   |Loc:' "$build/tst_qcop.log" || true
    [ "$status" = 0 ] || { echo "FAIL: tst_qcop (Qt $qt) exited with $status; log: $build/tst_qcop.log"; tail -20 "$build/tst_qcop.log"; exit 1; }

    echo "== Qt $qt: a program built against the installed package (CMake, pkg-config)"
    consumer="target/qt/consumer-qt$qt"
    cmake -S qt/tests/consumer -B "$consumer" -DQT_MAJOR=$qt -DCMAKE_PREFIX_PATH="$root/usr" >/dev/null
    cmake --build "$consumer" 2>&1 | grep -E "warning|error|Error" && exit 1
    "$consumer/consumer"
    g++ -std=c++17 -fPIC -Wall -Wextra -Werror qt/tests/consumer/main.cpp -o "$consumer/consumer-pc" \
        $(pkg-config --cflags --libs "qcop-qt$qt")
    "$consumer/consumer-pc" >/dev/null
done
echo "Qt 5 and Qt 6: built, installed side by side, tests passed"
