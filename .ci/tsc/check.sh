#!/bin/sh
# Type-checks web/herald-client.js (checkJs, its JSDoc) and proves that
# web/herald-client.d.ts declares what it exports, with compatible types.
set -eu
cd "$(dirname "$0")"
rm -rf build && mkdir -p build
cp ../../web/herald-client.js build/client.js
cp ../../web/herald-client.d.ts build/herald-client.d.ts
exec node_modules/.bin/tsc -p tsconfig.json
