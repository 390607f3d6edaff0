#!/usr/bin/env bash
# Fails when a dependency in Cargo.toml is named nowhere in the code (an unused crate costs
# build time on every machine). A manual check: `unused_crate_dependencies` cannot tell, for a
# crate with a library, a binary, tests and benchmarks, which target is meant to use what.
# A crate used only through another's macro or features may be listed in KEPT, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
KEPT=" "
status=0
deps=$(sed -n '/^\[dependencies\]/,/^\[/p;/^\[dev-dependencies\]/,/^\[/p' Cargo.toml |
  grep -E '^[a-z0-9_-]+ *=' | sed 's/ *=.*//' | sort -u)
for dep in $deps; do
  [[ "$KEPT" == *" $dep "* ]] && continue
  name="${dep//-/_}"
  if ! grep -rqE "\b${name}(::|!|\s*\{|;)|extern crate ${name}\b|use ${name}\b" src tests benches; then
    echo "check-deps: $dep is in Cargo.toml but no code names it; remove it" >&2
    status=1
  fi
done
exit $status
