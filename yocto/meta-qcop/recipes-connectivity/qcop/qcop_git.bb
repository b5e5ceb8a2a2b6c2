SUMMARY = "QCOP-style channel IPC for embedded Linux: the qcopd daemon and the qcop CLI"
SUMMARY:${PN}-daemon = "qcopd, the qcop channel message daemon"
DESCRIPTION = "qcop routes named-channel messages such as setVolume(int) on QPE/Audio \
               between local processes over a Unix socket, in the spirit of Qt \
               Extended's QCOP. qcopd is a small single-threaded daemon with bounded \
               memory; qcop is the command-line tool, compatible with Qt Extended's."
HOMEPAGE = "https://github.com/qcop-project/qcop"
BUGTRACKER = "https://github.com/qcop-project/qcop/issues"
SECTION = "net"
LICENSE = "MIT | Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE-MIT;md5=c015bfa6bd9970ab7fb3725cb29e2792 \
                    file://LICENSE-APACHE;md5=3b83ef96387f14655fc854ddc3c6bd57"

PV = "0.1.0+git"

# Where qcop comes from. The upstream URL is a placeholder: the project has not published
# a public repository yet. Point it at your server with PREMIRRORS (yocto/README.md), or
# build the checkout the layer is in with externalsrc. destsuffix=${BP} puts the sources
# where S defaults to on scarthgap (${WORKDIR}/${BP}) and on later releases
# (${UNPACKDIR}/${BP}).
SRC_URI = "git://github.com/qcop-project/qcop.git;protocol=https;branch=main;destsuffix=${BP} \
           file://qcopd.service \
           file://qcopd.socket \
           file://qcopd.init \
           file://qcopd.toml \
           file://qcop-tmpfiles.conf \
           file://run-ptest \
           "

# The default revision: a commit of this repository's main branch with the Cargo.lock that
# qcop-crates.inc lists and the licence files of LIC_FILES_CHKSUM. CI (.ci/yocto, check
# srcrev) fails when it is not an ancestor of HEAD or either differs from HEAD's, so after
# a change to Cargo.lock (and gen-crates-inc.py) point SRCREV at that commit. To build
# another commit, set SRCREV:pn-qcop and regenerate qcop-crates.inc from its Cargo.lock.
SRCREV = "734dfaad5afe00290e1dd27d4ae4583687955ef7"

# No release tags yet. When the project tags releases vX.Y.Z, upstream-version checks
# (devtool latest-version, devtool check-upgrade-status) read them with this pattern.
UPSTREAM_CHECK_GITTAGREGEX = "v(?P<pver>\d+(\.\d+)+)"

require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates ptest-cargo systemd update-rc.d useradd

# Cargo.toml's release profile strips the binaries (strip = true), which would trip the
# already-stripped QA error and leave the -dbg package empty: Yocto strips them itself.
# ptest-cargo builds the test binaries with these flags too.
CARGO_BUILD_FLAGS:append = " --config profile.release.strip=false"

# Cargo features. links: qcopd daemons on several boards joined over TCP (the [links]
# configuration section), about 125 KiB of qcopd (sealing of frames included); without it
# qcopd refuses a [links] section. The cargo class does not pass PACKAGECONFIG options to
# cargo: the flags below do.
PACKAGECONFIG ??= "links"
PACKAGECONFIG[links] = ",,"
CARGO_BUILD_FLAGS:append = " --no-default-features --features daemon${@bb.utils.contains('PACKAGECONFIG', 'links', ',links', '', d)}"

# Where the file:// entries are unpacked: UNPACKDIR from styhead on, WORKDIR on scarthgap,
# which has no UNPACKDIR. (Not a weak default for UNPACKDIR itself: that could override
# the release's own value.)
QCOP_FILESDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"

# Two packages: qcop-daemon (qcopd, its configuration, init script, systemd units and the
# qcop group) and qcop (the CLI, which pulls in the daemon). qcop-dev is empty for now;
# the C API's header and library go there once it exists.
PACKAGE_BEFORE_PN = "${PN}-daemon"

USERADD_PACKAGES = "${PN}-daemon"
GROUPADD_PARAM:${PN}-daemon = "--system qcop"

SYSTEMD_PACKAGES = "${PN}-daemon"
SYSTEMD_SERVICE:${PN}-daemon = "qcopd.socket qcopd.service"

INITSCRIPT_PACKAGES = "${PN}-daemon"
INITSCRIPT_NAME:${PN}-daemon = "qcopd"
INITSCRIPT_PARAMS:${PN}-daemon = "defaults 15 85"

# The programs, installed from the copies do_compile made (see there), as cargo_do_install
# would (it takes whatever is in target/ at do_install time). The Rust library (.rlib) is
# not installed: nothing links it from the sysroot. Add programs (or, with the C API, a
# library and its header) here.
QCOP_PROGRAMS = "qcopd qcop"
do_compile:append() {
    # ptest-cargo's cargo build --tests, which runs after do_compile, builds qcopd and qcop
    # again in the same place, with the test dependencies' features unified in: keep the
    # programs of the real build, so that images with and without ptest ship the same ones.
    rm -rf ${B}/qcop-programs
    install -d ${B}/qcop-programs
    for prog in ${QCOP_PROGRAMS}; do
        install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/$prog ${B}/qcop-programs/$prog
    done
}

do_install() {
    install -d ${D}${bindir}
    for prog in ${QCOP_PROGRAMS}; do
        install -m 0755 ${B}/qcop-programs/$prog ${D}${bindir}/$prog
    done

    install -d ${D}${sysconfdir}/qcop
    install -m 0644 ${QCOP_FILESDIR}/qcopd.toml ${D}${sysconfdir}/qcop/qcopd.toml
    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/docs/qcopd.toml ${D}${docdir}/${BPN}/qcopd.toml.example

    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}
        install -m 0644 ${QCOP_FILESDIR}/qcopd.service ${QCOP_FILESDIR}/qcopd.socket ${D}${systemd_system_unitdir}
        sed -i -e 's,@BINDIR@,${bindir},g' -e 's,@BASE_BINDIR@,${base_bindir},g' \
            -e 's,@SYSCONFDIR@,${sysconfdir},g' ${D}${systemd_system_unitdir}/qcopd.service
        install -d ${D}${nonarch_libdir}/tmpfiles.d
        install -m 0644 ${QCOP_FILESDIR}/qcop-tmpfiles.conf ${D}${nonarch_libdir}/tmpfiles.d/qcop.conf
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -d ${D}${INIT_D_DIR}
        install -m 0755 ${QCOP_FILESDIR}/qcopd.init ${D}${INIT_D_DIR}/qcopd
        sed -i -e 's,@BINDIR@,${bindir},g' -e 's,@SYSCONFDIR@,${sysconfdir},g' ${D}${INIT_D_DIR}/qcopd
    fi
}

# ptest-cargo builds the test binaries (cargo build --tests) and installs them to
# PTEST_PATH, with copies of qcopd and qcop, and a run-ptest that would run all of them.
# Ours replaces it: it runs only the test binaries, each with a time limit, and prints
# PASS:/FAIL:/SKIP: per test. The integration tests run the installed programs (run-ptest
# sets QCOP_BIN_DIR to ${bindir}): no build path is compiled into them.
do_install_ptest_cargo[postfuncs] += "qcop_install_run_ptest"
qcop_install_run_ptest() {
    for prog in ${QCOP_PROGRAMS}; do
        rm -f ${D}${PTEST_PATH}/$prog
    done
    install -m 0755 ${QCOP_FILESDIR}/run-ptest ${D}${PTEST_PATH}/run-ptest
    sed -i -e 's,@BINDIR@,${bindir},g' ${D}${PTEST_PATH}/run-ptest
}

FILES:${PN}-daemon += "${bindir}/qcopd \
                       ${sysconfdir}/qcop \
                       ${INIT_D_DIR}/qcopd \
                       ${systemd_system_unitdir}/qcopd.service \
                       ${systemd_system_unitdir}/qcopd.socket \
                       ${nonarch_libdir}/tmpfiles.d/qcop.conf \
                       "
CONFFILES:${PN}-daemon = "${sysconfdir}/qcop/qcopd.toml"

# The CLI is of no use without the daemon: IMAGE_INSTALL:append = " qcop" brings both.
RDEPENDS:${PN} += "${PN}-daemon"
RDEPENDS:${PN}-ptest += "${PN}-daemon"
