#!/usr/bin/env bash
# Provisioning example: install veer's config, start the service, apply the desired state,
# follow the rollout the config declares (if any) to its end, and wait until the old group has
# no flow left. Safe to re-run: every step is idempotent.
#
#   sudo ./provision.sh veer.toml web v1
#
# With examples/veer.toml: the daemon applies the file at start, which starts its declared
# rollout to v2 (steps 1, 5, 25, 50, 100%, 30 s each, rolled back by itself above 1% failed
# connections); this script follows it live, then waits for v1 to drain.
#
# ROOT (default: /) is where the config and the unit are installed, for an image or a
# container's root being prepared; the `veer` and `systemctl` on PATH act on the running node.
set -euo pipefail

usage="usage: provision.sh CONFIG SERVICE OLD_GROUP"
config=${1:?$usage}
service=${2:?$usage}
old_group=${3:?$usage}
root=${ROOT:-}
here=$(cd "$(dirname "$0")" && pwd)

# Refuse a broken file before touching anything: exit 1, every problem with its line.
veer validate -f "$config"

install -D -m 0644 "$config" "$root/etc/veer/veer.toml"
# From a source tree the unit is in dist/; `cargo xtask install` puts it in PREFIX/lib/systemd.
if [ -f "$here/../dist/veer.service" ]; then
    install -D -m 0644 "$here/../dist/veer.service" "$root/etc/systemd/system/veer.service"
fi
systemctl daemon-reload
# Type=notify: this returns once the programs are attached and the control socket serves.
systemctl enable --now veer

# The daemon applied the file at start: applying it again changes nothing (exit 0 either way).
veer apply -f "$root/etc/veer/veer.toml" --reason "provisioned by $(basename "$0")"

# A rollout declared in the file started when it was applied: follow it to its end
# (exit 0 when it completes; 1, and this script with it, when it is rolled back).
if veer rollout status "$service" >/dev/null 2>&1; then
    veer rollout status "$service" --watch
fi

# Drain the old group: exit 0 once its last flow ended, 3 if flows remain after the timeout.
if veer drain "$service" "$old_group" --wait --timeout 10m --reason "provisioned: $old_group retired"; then
    echo "$service/$old_group drained"
else
    status=$?
    [ "$status" -eq 3 ] && echo "$service/$old_group still has flows after 10m" >&2
    exit "$status"
fi
