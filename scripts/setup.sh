#!/usr/bin/env bash
# Installs what a fresh Debian machine with Rust, Node and apt lacks to build, run and test
# Tidings. Skips everything already installed, so a second run takes seconds.
#
#   Debian:    chromium (Playwright drives it; Playwright's own browser download can't work here),
#              postgresql (a throwaway server for the integration tests' second run),
#              redis-server (the two-instance tests start their own),
#              nginx-light (tests/it/proxy.rs runs the README's nginx configuration in front of two instances)
#   rustup:    the wasm32-unknown-unknown target
#   cargo:     cargo-leptos 0.3.10 (0.3.11 needs a newer Rust than 1.95),
#              wasm-bindgen-cli at exactly the version Cargo.toml pins
#   npm:       end2end/ (Playwright, and binaryen's wasm-opt for release builds)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)"/\1/p' Cargo.toml)
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

for tool in cargo rustup npm node; do
  have "$tool" || { echo "setup: $tool is missing; install Rust (rustup) and Node.js first." >&2; exit 1; }
done

if [ ! -x /usr/bin/chromium ]; then
  step "Installing Debian's chromium"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

if [ -z "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ]; then
  step "Installing Debian's postgresql (the integration tests run on it too)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi

if ! command -v redis-server >/dev/null 2>&1; then
  step "Installing Debian's redis-server (the two-instance tests start their own)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi

if [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
  step "Installing Debian's nginx-light (tests/it/proxy.rs runs the README's nginx configuration)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "Adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
  step "Installing cargo-leptos $CARGO_LEPTOS_VERSION (about 15 minutes on 2 cores, once)"
  cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  step "Installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 3 minutes, once)"
  # Not --locked: its lock file wants a crate version this registry does not serve.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

if [ ! -f end2end/node_modules/.package-lock.json ] \
  || [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
  step "Installing the end-to-end test packages (npm ci)"
  (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

step "Set-up complete"
