#!/bin/sh
# Build the browser playground (frontend/) into src/livecode/static/.
# The built files are committed, so `livecode serve` and the Python package need no Node;
# run this after changing anything under frontend/src and commit the result.
set -eu
cd "$(dirname "$0")/../frontend"
npm ci --no-audit --no-fund
npm run build
