#!/usr/bin/env bash
# Provisioning example: install veer's config, start the service, apply the desired state and
# wait for the old version to drain. Safe to re-run: every step is idempotent.
#
#   sudo ./provision.sh veer.toml web v1
set -euo pipefail

config=${1:?usage: provision.sh CONFIG SERVICE OLD_GROUP}
service=${2:?usage: provision.sh CONFIG SERVICE OLD_GROUP}
old_group=${3:?usage: provision.sh CONFIG SERVICE OLD_GROUP}

# Refuse a broken file before touching anything (exit 1 with file:line:column: reason).
veer validate -f "$config"

install -D -m 0644 "$config" /etc/veer/veer.toml
install -D -m 0644 "$(dirname "$0")/../dist/veer.service" /etc/systemd/system/veer.service
systemctl daemon-reload
systemctl enable --now veer

# Wait for the control socket (the daemon applies /etc/veer/veer.toml at start).
for _ in $(seq 1 50); do
    veer status >/dev/null 2>&1 && break
    sleep 0.2
done

# Applying the same file again is a no-op; the JSON says which revision is live.
revision=$(veer apply -f /etc/veer/veer.toml --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])')
echo "revision $revision in force"

# Drain the old group: exit 0 once its last flow ended, 3 if flows remain after the timeout.
if veer drain "$service" "$old_group" --wait --timeout 10m; then
    echo "$service/$old_group drained"
else
    status=$?
    [ "$status" -eq 3 ] && echo "$service/$old_group still has flows after 10m" >&2
    exit "$status"
fi
