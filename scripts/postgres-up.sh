#!/usr/bin/env bash
# Make sure the test PostgreSQL is reachable; start the local cluster if it
# is installed but down (shared/TOOLCHAIN.md). Installs nothing.
# Exit 0 when reachable, 1 when not (with a message saying why).
set -uo pipefail

url="${DOORCODE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"

reachable() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -d "$url" -t 3
  else
    # No client tools: a TCP connect to the default address is the best we can do.
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

if reachable; then
  echo "PostgreSQL is up ($url)"
  exit 0
fi
if [ -n "${DOORCODE_TEST_PG:-}" ]; then
  echo "!!! PostgreSQL at DOORCODE_TEST_PG=$url is not reachable; not starting a local one" >&2
  exit 1
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d /etc/postgresql ]; then
  echo "!!! PostgreSQL is not installed here (no pg_ctlcluster or /etc/postgresql)." >&2
  echo "!!! Install it (Debian: apt-get install postgresql) or point DOORCODE_TEST_PG at one." >&2
  exit 1
fi
version="$(ls /etc/postgresql | sort -V | tail -n 1)"
echo "starting PostgreSQL $version (cluster main)"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  if reachable; then
    echo "PostgreSQL is up ($url)"
    exit 0
  fi
  sleep 1
done
echo "!!! PostgreSQL $version did not come up; see /var/log/postgresql/" >&2
exit 1
