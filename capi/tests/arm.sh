#!/usr/bin/env bash
# libqcop on ARM: cross-builds libqcop (cargo-c), qcopd and qcop for TARGET, compiles the C
# test suite with the Debian cross compiler against the installed library (pkg-config with a
# sysroot), and runs it under qemu-user. Also reports the stripped size of libqcop.so.
# Usage: bash capi/tests/arm.sh TARGET   (a glibc target of targets/*.conf; from .ci/arm)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=qemu/lib.sh
. qemu/lib.sh

load_profile "${1:?usage: capi/tests/arm.sh TARGET}"
[ "$libc" = glibc ] || die "$triple: the C tests need a glibc target (libqcop is a shared library)"
ensure_host user || exit 1
command -v cargo-cinstall >/dev/null || die "cargo-c is missing (apt-get install cargo-c)"
cargo_setup
cargo_runner_setup
# See capi/tests/run.sh: Debian's cargo-c on the sparse index.
export CARGO_REGISTRIES_CRATES_IO_PROTOCOL=sparse CARGO_UNSTABLE_SPARSE_REGISTRY=true
export __CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS=nightly

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dest="$work/dest"

say "== libqcop for $triple (cargo cinstall, profile release-capi)"
CARGO_TARGET_DIR="$QCOP_TARGET_DIR/capi" cargo cinstall --locked -p qcop-capi --profile release-capi \
    --target "$triple" --prefix /usr --libdir /usr/lib --destdir "$dest" 2>&1 |
    grep -v "unused manifest key: lints" | tail -2
cargo build --locked --target "$triple" --bin qcopd --bin qcop 2>&1 | tail -1
so="$(readlink -f "$dest/usr/lib/libqcop.so")"
printf 'libqcop.so for %s, stripped: %s bytes (%s KiB)\n' "$triple" "$(stripped_size "$so")" \
    "$(($(stripped_size "$so") / 1024))"

export PKG_CONFIG_LIBDIR="$dest/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest"
unset PKG_CONFIG_PATH
# shellcheck disable=SC2046
"$linker" -std=c11 -Wall -Wextra -Werror -O1 $(pkg-config --cflags qcop) \
    capi/tests/test_capi.c -o "$work/test_capi" $(pkg-config --libs qcop) -lpthread
for src in examples/c/*.c; do
    # shellcheck disable=SC2046
    "$linker" -std=c11 -Wall -Wextra -Werror -O1 $(pkg-config --cflags qcop) "$src" \
        -o "$work/$(basename "$src" .c)" $(pkg-config --libs qcop)
done

say "== C test suite under $qemu_user"
bin="$QCOP_TARGET_DIR/$triple/debug"
mkdir -p "$work/run"
# The suite starts qcopd and qcop itself: binfmt_misc hands them to qemu, QEMU_LD_PREFIX
# (cargo_runner_setup) gives them the target's libc, LD_LIBRARY_PATH libqcop.
LD_LIBRARY_PATH="$dest/usr/lib" timeout -k 10 600 $qemu_user ${sysroot:+-L "$sysroot"} \
    "$work/test_capi" "$bin/qcopd" "$bin/qcop" "$work/run"
