#!/bin/sh
# Builds the Debian packages 'cmdop' (the client) and 'cmdop-node' (the daemon and its systemd
# units) into $CARGO_TARGET_DIR/debian/ (default target/debian/). Needs cargo-deb
# ('cargo install cargo-deb --locked'); runs anywhere, no CI needed.
#
# Steps: build both binaries in release mode; let each print its man pages and completion
# scripts into target/release/dist/<binary>/ (cargo-deb assets must be files, and the
# [package.metadata.deb] tables in cli/Cargo.toml and node/Cargo.toml list them from there);
# then package without building again. Check the result with 'dpkg-deb -c FILE.deb'.
set -eu

cd "$(dirname "$0")/../.."
target_dir=${CARGO_TARGET_DIR:-target}

cargo build --release --locked -p cmdop -p cmdop-node

for binary in cmdop cmdop-node; do
    out="$target_dir/release/dist/$binary"
    rm -rf "$out"
    mkdir -p "$out/man" "$out/bash" "$out/zsh" "$out/fish"
    "$target_dir/release/$binary" man --dir "$out/man" 2>/dev/null
    # cargo-deb compresses man pages only when they are not under target/; Debian wants them gzipped.
    gzip -9n "$out"/man/*.1
    "$target_dir/release/$binary" completions bash >"$out/bash/$binary"
    "$target_dir/release/$binary" completions zsh >"$out/zsh/_$binary"
    "$target_dir/release/$binary" completions fish >"$out/fish/$binary.fish"
done

# The release profile keeps line tables for backtraces; the packages ship stripped binaries.
cargo deb --no-build --locked --strip -p cmdop-node
cargo deb --no-build --locked --strip -p cmdop
