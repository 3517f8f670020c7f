#!/usr/bin/env bash
# Type-checks the k6 scripts against k6's own API types (@types/k6) with the pinned TypeScript
# compiler. Exits non-zero on any type error. Needs Node.js and npm; k6 itself is not needed.
#
# Installs the pinned dev dependencies with `npm ci` when node_modules is missing or when
# package.json / package-lock.json changed since the last install.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "check.sh: Node.js and npm are required (see README.md)" >&2
  exit 2
fi

# The lock file is committed without "resolved" URLs (see .npmrc); npm fetches each locked
# name@version from the configured registry and verifies it against the locked integrity.
if grep -q '"resolved"' package-lock.json; then
  echo "check.sh: package-lock.json has \"resolved\" URLs; regenerate it from this directory" >&2
  echo "          with 'npm install --package-lock-only' (.npmrc omits them)." >&2
  exit 2
fi

stamp=node_modules/.eaglerank-k6-installed
wanted="$(node -e '
  const { createHash } = require("crypto");
  const { readFileSync } = require("fs");
  const h = createHash("sha256");
  for (const f of ["package.json", "package-lock.json"]) h.update(readFileSync(f));
  process.stdout.write(h.digest("hex"));
')"
if [[ ! -d node_modules || ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
  echo "check.sh: installing pinned dev dependencies (npm ci)"
  npm ci --no-audit --no-fund
  printf '%s' "$wanted" >"$stamp"
fi

echo "check.sh: $(npx --no -- tsc --version), @types/k6 $(node -p 'require("./node_modules/@types/k6/package.json").version')"
# --no: never download a package called "tsc"; use only the locally installed compiler.
if npx --no -- tsc --noEmit -p .; then
  echo "check.sh: OK, no type errors"
else
  status=$?
  echo "check.sh: type errors (tsc exit status $status)" >&2
  exit "$status"
fi
