# Shared by qemu/run and .ci/arm (bash; sourced, not executed).
# Profile variables ($triple, $sysroot, ...) are set by load_profile.
# shellcheck shell=bash disable=SC2154
#
# Everything target-specific comes from the profiles in targets/*.conf: this file only knows
# how to read them, how to point cargo at the cross linkers and qemu-user, how to fetch and
# cache Debian's ARM kernels and busybox, and how to pack and boot an initramfs.

QCOP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QCOP_TARGET_DIR="${CARGO_TARGET_DIR:-$QCOP_ROOT/target}"
QCOP_CACHE="${QCOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qcop-qemu}"
# Debian release and mirrors the kernels and busybox come from.
QCOP_DEBIAN_SUITE="${QCOP_DEBIAN_SUITE:-bookworm}"
QCOP_DEBIAN_MIRROR="${QCOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
QCOP_DEBIAN_SECURITY_MIRROR="${QCOP_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ----- target profiles --------------------------------------------------------------------

profile_keys="triple arch libc linker linker_pkg strip strip_pkg sysroot multiarch qemu_user
    qemu_user_pkg deb_arch qemu_system qemu_system_pkg machine cpu smp memory_mb console
    kernel_pkg busybox_pkg tier1 tier2 qcopd_budget_kib board guest_compat guest_tests
    release_toolchain release_std release_std_features release_rustflags"

# The triples of every profile, sorted.
all_triples() {
    local f
    for f in "$QCOP_ROOT"/targets/*.conf; do basename "$f" .conf; done
}

# The triples whose profile has KEY=yes (tier1, tier2).
triples_with() {
    local t
    for t in $(all_triples); do
        if [ "$(profile_get "$t" "$1")" = yes ]; then echo "$t"; fi
    done
}

# Loads a profile into the shell variables named in $profile_keys. NAME is a triple or the
# profile's board name (aarch64, armv7).
load_profile() {
    local name="$1" f="" t key
    if [ -f "$QCOP_ROOT/targets/$name.conf" ]; then
        f="$QCOP_ROOT/targets/$name.conf"
    else
        for t in $(all_triples); do
            if grep -qx "board=$name" "$QCOP_ROOT/targets/$t.conf"; then
                f="$QCOP_ROOT/targets/$t.conf"
            fi
        done
    fi
    [ -n "$f" ] || die "no target profile named '$name' (targets: $(all_triples | tr '\n' ' '))"
    for key in $profile_keys; do unset "$key"; done
    # shellcheck disable=SC1090
    . "$f"
    for key in $profile_keys; do
        [ -n "${!key+set}" ] || die "$f: missing key '$key'"
    done
    [ "$triple" = "$(basename "$f" .conf)" ] || die "$f: triple=$triple does not match the file name"
}

# One KEY of the profile TRIPLE, without disturbing the current profile.
profile_get() { (load_profile "$1" && printf '%s\n' "${!2}"); }

# CARGO_TARGET_<TRIPLE>_ prefix of cargo's per-target environment variables.
cargo_env_prefix() {
    printf 'CARGO_TARGET_%s_' "$(printf '%s' "$1" | tr 'a-z.-' 'A-Z__')"
}

# Exports what cargo needs to build for the loaded profile.
cargo_setup() {
    export "$(cargo_env_prefix "$triple")LINKER=$linker"
}

# Exports what cargo needs to run the loaded profile's test binaries under qemu-user: the
# runner (bounded by QCOP_USER_TEST_TIMEOUT per test binary, so a hang fails instead of
# blocking), and QEMU_LD_PREFIX for the programs the tests start, which the kernel hands to
# qemu through binfmt_misc.
cargo_runner_setup() {
    local runner="$qemu_user${sysroot:+ -L $sysroot}"
    export "$(cargo_env_prefix "$triple")RUNNER=timeout --verbose -k 10 ${QCOP_USER_TEST_TIMEOUT:-600} $runner"
    if [ -n "$sysroot" ]; then
        export QEMU_LD_PREFIX="$sysroot"
    else
        unset QEMU_LD_PREFIX
    fi
}

# A markdown table of the profiles (for the README: `qemu/run targets`).
profiles_table() {
    local t
    echo '| target | libc | Debian linker package (linker) | qemu-user (sysroot) | qemu-system machine, CPU | kernel package | tiers |'
    echo '|---|---|---|---|---|---|---|'
    for t in $(all_triples); do
        (
            load_profile "$t"
            local tiers="build"
            [ "$tier1" = yes ] && tiers="$tiers, 1 (qemu-user)"
            [ "$tier2" = yes ] && tiers="$tiers, 2 (board \`$board\`)"
            printf '| `%s` | %s | %s (`%s`) | `%s` (%s) | `%s -M %s -cpu %s -smp %s` | `%s` | %s |\n' \
                "$triple" "$libc" "${linker_pkg:-none: rust-lld from rustup}" "$linker" \
                "$qemu_user" "${sysroot:-static, none}" "$qemu_system" "$machine" "$cpu" "$smp" \
                "$kernel_pkg" "$tiers"
        )
    done
}

# ----- host requirements ------------------------------------------------------------------

is_root() { [ "$(id -u)" = 0 ]; }

# The triples a tier builds: build (every profile), user (tier-1 profiles), system (tier-2
# profiles with their compat and test-program targets).
tier_triples() {
    local t
    case "$1" in
        build) all_triples ;;
        user) triples_with tier1 ;;
        system)
            for t in $(triples_with tier2); do
                echo "$t"
                # shellcheck disable=SC2046
                printf '%s\n' $(profile_get "$t" guest_compat) $(profile_get "$t" guest_tests)
            done | sort -u
            ;;
        *) die "unknown tier '$1' (build, user, system)" ;;
    esac
}

# Debian packages the given tiers need on the host (a subshell: the caller's profile stays).
host_packages() (
    local t tier pkgs="cpio binutils debian-archive-keyring"
    for tier in "$@"; do
        for t in $(tier_triples "$tier"); do
            load_profile "$t"
            pkgs="$pkgs $linker_pkg $strip_pkg"
            [ "$tier" = user ] && pkgs="$pkgs $qemu_user_pkg"
            [ "$tier" = system ] && [ "$tier2" = yes ] && pkgs="$pkgs $qemu_system_pkg"
        done
    done
    # shellcheck disable=SC2086
    printf '%s\n' $pkgs | sort -u
)

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
    done
}

missing_rust_targets() {
    local installed t
    installed="$(rustup target list --installed 2>/dev/null)"
    for t in "$@"; do
        grep -qx "$t" <<<"$installed" || echo "$t"
    done
}

# "TOOLCHAIN TRIPLE" for every profile among the given triples whose release build needs a
# toolchain of its own (release_toolchain) that is not installed with rust-src and the target.
missing_release_toolchains() (
    local t
    for t in "$@"; do
        load_profile "$t"
        [ -n "$release_toolchain" ] || continue
        if ! rustup run "$release_toolchain" rustc --version >/dev/null 2>&1 ||
            ! rustup +"$release_toolchain" component list --installed 2>/dev/null | grep -q '^rust-src' ||
            ! rustup +"$release_toolchain" target list --installed 2>/dev/null | grep -qx "$triple"; then
            echo "$release_toolchain $triple"
        fi
    done
)

# binfmt_misc entries that let the kernel run ARM programs through qemu-user: the test
# binaries spawn qcopd and qcop (and themselves), which only works if exec() of an ARM ELF
# succeeds. The F flag opens the interpreter at registration, so it also works in containers
# and chroots.
binfmt_names="qemu-aarch64 qemu-arm"

binfmt_missing() {
    local n
    for n in $binfmt_names; do
        grep -qx enabled "/proc/sys/fs/binfmt_misc/$n" 2>/dev/null || echo "$n"
    done
}

binfmt_register() {
    local n conf
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
            die "cannot mount binfmt_misc (modprobe binfmt_misc?)"
    fi
    for n in $(binfmt_missing); do
        conf="/usr/lib/binfmt.d/$n.conf"
        [ -f "$conf" ] || die "$conf missing (package qemu-user-static)"
        if [ -e "/proc/sys/fs/binfmt_misc/$n" ]; then
            echo 1 >"/proc/sys/fs/binfmt_misc/$n"
        else
            cat "$conf" >/proc/sys/fs/binfmt_misc/register
        fi
        say "registered binfmt_misc handler $n"
    done
}

# Checks (and as root installs) what the tiers need. Prints the exact commands and returns
# 1 if something is missing and cannot be installed.
ensure_host() {
    local pkgs targets rust_targets binfmt="" tier t toolchains tc
    # shellcheck disable=SC2046
    pkgs="$(missing_packages $(host_packages "$@"))"
    rust_targets=""
    for tier in "$@"; do
        rust_targets="$rust_targets $(tier_triples "$tier")"
    done
    # shellcheck disable=SC2046,SC2086
    targets="$(missing_rust_targets $(printf '%s\n' $rust_targets | sort -u))"
    # shellcheck disable=SC2046,SC2086
    toolchains="$(missing_release_toolchains $(printf '%s\n' $rust_targets | sort -u))"
    case " $* " in *" user "*) binfmt="$(binfmt_missing)" ;; esac
    if [ -z "$pkgs$targets$toolchains$binfmt" ]; then return 0; fi
    if is_root; then
        if [ -n "$pkgs" ]; then
            say "installing: ${pkgs//$'\n'/ }"
            # A private TMPDIR: another apt or a /tmp cleaner must not pull the .debs away.
            mkdir -p /var/tmp/qcop-apt
            # shellcheck disable=SC2086
            TMPDIR=/var/tmp/qcop-apt DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null ||
                { apt-get update -qq && TMPDIR=/var/tmp/qcop-apt DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null; } ||
                die "apt-get install $pkgs failed"
        fi
        if [ -n "$targets" ]; then
            # shellcheck disable=SC2086
            rustup target add $targets || die "rustup target add $targets failed"
        fi
        while read -r tc t; do
            [ -n "$tc" ] || continue
            rustup toolchain install "$tc" --profile minimal --component rust-src --target "$t" ||
                die "rustup toolchain install $tc failed"
        done <<<"$toolchains"
        case " $* " in *" user "*) binfmt_register ;; esac
        return 0
    fi
    say "missing host requirements; install them with (or run this as root, which does it):"
    [ -n "$pkgs" ] && say "    sudo apt-get install ${pkgs//$'\n'/ }"
    [ -n "$targets" ] && say "    rustup target add ${targets//$'\n'/ }    # as your user"
    while read -r tc t; do
        [ -n "$tc" ] && say "    rustup toolchain install $tc --profile minimal --component rust-src --target $t    # as your user"
    done <<<"$toolchains"
    if [ -n "$binfmt" ]; then
        say "    sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc    # if not mounted"
        for t in $binfmt; do
            say "    sudo sh -c 'cat /usr/lib/binfmt.d/$t.conf > /proc/sys/fs/binfmt_misc/register'"
        done
    fi
    return 1
}

# ----- building -------------------------------------------------------------------------

# Builds qcopd and qcop for the loaded profile with the release profile. A profile with a
# release_toolchain is a flash build: that (pinned nightly) toolchain rebuilds the standard
# library for the target with the profile's crates, features and flags (see targets/README.md).
build_release() {
    cargo_setup
    if [ -z "$release_toolchain" ]; then
        cargo build --locked --release --bins --target "$triple"
        return
    fi
    say "   flash build: cargo +$release_toolchain, -Z build-std=$release_std" \
        "-Z build-std-features=$release_std_features, rustflags '$release_rustflags'"
    env "$(cargo_env_prefix "$triple")RUSTFLAGS=$release_rustflags" \
        cargo +"$release_toolchain" build --locked --release --bins --target "$triple" \
        -Z build-std="$release_std" -Z build-std-features="$release_std_features"
}

release_dir() { echo "$QCOP_TARGET_DIR/$1/release"; }

# Compiles the test programs of the loaded profile and prints "KIND NAME EXECUTABLE" per
# test binary: KIND lib, bin or test (integration tests), NAME the cargo target name.
build_tests() {
    cargo_setup
    cargo test --locked --target "$triple" --no-run --message-format=json-render-diagnostics |
        sed -n 's/.*"target":{"kind":\["\([a-z-]*\)"\][^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2 \3/p'
}

# Stripped size in bytes of FILE, measured on a copy with the profile's strip tool.
stripped_size() {
    local tmp
    tmp="$(mktemp)"
    cp "$1" "$tmp"
    "$strip" -o "$tmp.s" "$tmp" 2>/dev/null || cp "$tmp" "$tmp.s"
    stat -c %s "$tmp.s"
    rm -f "$tmp" "$tmp.s"
}

# ----- Debian packages for the guests (kernel, busybox), cached -------------------------

apt_dir() { echo "$QCOP_CACHE/apt/$1"; }

# apt-get/apt-cache options for a private view of Debian's DEB_ARCH archive: no foreign
# architecture is added to the host, nothing is installed.
apt_opts() {
    local d
    d="$(apt_dir "$1")"
    printf '%s\n' "-oAPT::Architecture=$1" "-oAPT::Architectures=$1" \
        "-oDir::State::Lists=$d/lists" "-oDir::Cache=$d/cache" \
        "-oDir::Etc::SourceList=$d/sources.list" "-oDir::Etc::SourceParts=$d/sources.list.d" \
        "-oDir::State::Status=$d/status" "-oDebug::NoLocking=1"
    is_root && echo "-oAPT::Sandbox::User=root"
}

# Refreshes the package lists of DEB_ARCH. A failed refresh (offline, mirror in sync) keeps
# the previous lists, which is fine while they resolve the packages.
apt_update() {
    local d arch="$1" try
    d="$(apt_dir "$arch")"
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/sources.list.d"
    touch "$d/status"
    cat >"$d/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $QCOP_DEBIAN_MIRROR $QCOP_DEBIAN_SUITE main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $QCOP_DEBIAN_MIRROR $QCOP_DEBIAN_SUITE-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $QCOP_DEBIAN_SECURITY_MIRROR $QCOP_DEBIAN_SUITE-security main
EOF
    for try in 1 2 3; do
        # shellcheck disable=SC2046
        apt-get $(apt_opts "$arch") -qq update >"$d/update.log" 2>&1 && return 0
        sleep $((try * 2))
    done
    say "warning: some $arch package lists could not be refreshed; resolving with the lists at hand:"
    grep -E '^(E|W):' "$d/update.log" | head -3 >&2
    return 0
}

# Resolves a package for DEB_ARCH: a meta package such as linux-image-arm64 becomes the
# current linux-image-6.1.0-NN-arm64 (the ABI number changes with kernel updates).
apt_resolve() {
    local arch="$1" pkg="$2" dep
    # shellcheck disable=SC2046
    dep="$(apt-cache $(apt_opts "$arch") depends "$pkg" 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[^ ]*\).*/\1/p' | head -1)"
    echo "${dep:-$pkg}"
}

# Downloads PKG for DEB_ARCH into the cache (once) and prints the .deb path. If the archive
# cannot be reached, the newest cached .deb of that package is used.
apt_fetch() {
    local arch="$1" pkg="$2" debs ver deb
    debs="$QCOP_CACHE/debs/$arch"
    mkdir -p "$debs"
    # shellcheck disable=SC2046
    ver="$(apt-cache $(apt_opts "$arch") show --no-all-versions "$pkg" 2>/dev/null |
        sed -n 's/^Version: //p' | head -1)"
    if [ -n "$ver" ]; then
        deb="$(ls "$debs/${pkg}_"*"${ver##*:}_$arch.deb" 2>/dev/null | head -1)"
        if [ -z "$deb" ]; then
            # shellcheck disable=SC2046
            (cd "$debs" && apt-get $(apt_opts "$arch") -qq download "$pkg=$ver" >/dev/null) ||
                die "cannot download $pkg=$ver for $arch"
            deb="$(ls "$debs/${pkg}_"*"${ver##*:}_$arch.deb" | head -1)"
        fi
    else
        deb="$(ls -t "$debs/${pkg}_"*"_$arch.deb" 2>/dev/null | head -1)"
        [ -n "$deb" ] || die "package $pkg ($arch) is neither in the archive lists nor cached"
        say "warning: $pkg not in the lists; using cached $(basename "$deb")"
    fi
    echo "$deb"
}

# Kernel modules unpacked with each kernel (paths under lib/modules/*/kernel/): virtio PCI,
# virtio-net and 9p, for boards with a network or a shared directory (tier 3). Everything
# else in the console-only boards is built into Debian's kernels.
guest_modules="drivers/virtio/virtio_pci*.ko net/core/failover.ko drivers/net/net_failover.ko
    drivers/net/virtio_net.ko net/9p/*.ko fs/9p/*.ko fs/netfs/*.ko fs/fscache/*.ko"

# Unpacks the kernel image (and $guest_modules: the package has no modules.dep, so a board
# insmods them in dependency order) of the loaded profile into the cache; prints the
# directory, which holds boot/vmlinuz-* and lib/modules/.
fetch_kernel() {
    local pkg deb dir m old globs=()
    apt_update "$deb_arch"
    pkg="$(apt_resolve "$deb_arch" "$kernel_pkg")"
    deb="$(apt_fetch "$deb_arch" "$pkg")"
    dir="$QCOP_CACHE/unpacked/$(basename "$deb" .deb)"
    # Superseded kernels of this flavour (an older ABI) go, so the cache stays at one each.
    for old in "$(dirname "$deb")"/linux-image-[0-9]*-"${kernel_pkg#linux-image-}"_*_"$deb_arch".deb; do
        if [ -e "$old" ] && [ "$old" != "$deb" ]; then
            rm -rf "$old" "$QCOP_CACHE/unpacked/$(basename "$old" .deb)"
        fi
    done
    if [ ! -f "$dir/.done" ]; then
        rm -rf "$dir" && mkdir -p "$dir"
        for m in $guest_modules; do globs+=("./lib/modules/*/kernel/$m"); done
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --wildcards './boot/vmlinuz-*' "${globs[@]}" ||
            die "cannot unpack the kernel from $deb"
        touch "$dir/.done"
    fi
    echo "$dir"
}

fetch_busybox() {
    local deb dir
    deb="$(apt_fetch "$deb_arch" "$busybox_pkg")"
    dir="$QCOP_CACHE/unpacked/$(basename "$deb" .deb)"
    if [ ! -f "$dir/.done" ]; then
        rm -rf "$dir" && mkdir -p "$dir"
        dpkg-deb -x "$deb" "$dir"
        touch "$dir/.done"
    fi
    echo "$dir/bin/busybox"
}
