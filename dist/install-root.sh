#!/bin/sh
# Builds the host and the shipped plugins in release mode and installs them under ROOT, laid out
# as on the target system: ROOT/usr/bin/calllogger, ROOT/usr/lib/calllogger/plugins/*.so.
# The Dockerfile's build stage runs exactly this; so does the test suite (host/tests/it/container.rs).
# With $CALLLOGGER_BUILD_TARGET (a Rust target with a glibc version, e.g.
# aarch64-unknown-linux-gnu.2.31) it cross-builds with `cargo zigbuild`, linking against that
# glibc: `cargo xtask deb` builds its packages so.
# Usage: dist/install-root.sh ROOT   (from the repository's top folder)
set -eu
root=${1:?usage: dist/install-root.sh ROOT}
# Run from a cargo process (a test, `cargo run -p xtask`), the build would see that process's
# CARGO_MANIFEST_DIR, and ring's build script reruns whenever it changes: without it, every caller
# shares one build.
unset CARGO_MANIFEST_DIR
set -- -p calllogger -p calllogger-mock-calls -p calllogger-siemens-hipath-serial -p calllogger-beronet
if [ -n "${CALLLOGGER_BUILD_TARGET:-}" ]; then
    cargo zigbuild --release --locked --target "$CALLLOGGER_BUILD_TARGET" "$@"
    target=${CARGO_TARGET_DIR:-target}/${CALLLOGGER_BUILD_TARGET%%.*}/release
else
    cargo build --release --locked "$@"
    target=${CARGO_TARGET_DIR:-target}/release
fi
install -d -m 0755 "$root/usr/bin" "$root/usr/lib/calllogger/plugins"
install -m 0755 "$target/calllogger" "$root/usr/bin/calllogger"
for plugin in mock_calls siemens_hipath_serial beronet; do
    # Not group- or world-writable: the host refuses plugins anyone else could change.
    install -m 0644 "$target/libcalllogger_$plugin.so" "$root/usr/lib/calllogger/plugins/"
done
