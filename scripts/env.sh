# Sourced by run.sh and test.sh: the environment every build and test shares.
# binaryen's wasm-opt from npm (Debian's 108 breaks hydration) and cargo's tools first on PATH.
export PATH="$PWD/end2end/node_modules/.bin:$HOME/.cargo/bin:$PATH"
# cargo-leptos sets this while building; setting it for `cargo test` too keeps both on one
# build of leptos_config (which reads it at compile time) instead of rebuilding the tree.
export LEPTOS_OUTPUT_NAME=tidings
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
