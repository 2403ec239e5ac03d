#!/usr/bin/env bash
# System packages the tests need, installed once (idempotent): podman + runc run container
# steps without a daemon; busybox-static is the one binary in the tests' local image;
# postgresql (the 15 server on Debian 12) gives initdb/pg_ctl for the tests' own throw-away
# PostgreSQL cluster (tests/pg_fixture.py; no server needs to run as a service); python3 is
# the system Python the task user runs in the OS-user isolation tests (tests/test_task_isolation.py:
# a venv under /root is out of that user's reach); chromium is the browser the web UI's
# end-to-end tests drive through Playwright (executable_path; Playwright's own browser
# download is never used); prometheus gives the server and promtool the metrics tests run
# (tests/test_ops_server.py: a real scrape, the alert rules' unit tests); docker-registry is the
# OCI registry tests/test_images.py pushes to and locks from on loopback (its Debian service is
# not used). Under CI=true a test skipped for a missing
# prerequisite fails (tests/conftest.py), so everything a test needs is installed here.
set -euo pipefail
# The unprivileged OS user that server tasks run as (ARGOSY_TASK_USER) in the isolation tests.
if [ "$(id -u)" -eq 0 ] && ! id argosy-task >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin argosy-task
fi
missing=()
for pkg in podman runc busybox-static postgresql python3 chromium prometheus docker-registry; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the tests need these Debian packages: ${missing[*]}; install them with apt-get as root" >&2
  exit 1
fi
echo "installing ${missing[*]} for the tests..." >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
