//! The Examples section of every subcommand's `--help` and man page, one constant each. Every
//! example is a command an operator or a provisioning script runs as written.

/// `veer`.
pub const VEER: &str = "\
Examples:
  # What the node is doing: services, weights, backends, flows, counters
  veer status

  # Move 10% of web's new connections to v2, then watch a rollout to v2
  veer shift web v1=90 v2=10 --reason \"canary for ticket 42\"
  veer rollout start web --to v2 --wait

  # The same from a script: JSON out, errors included, with documented exit codes
  veer status -o json";

/// `veer daemon`.
pub const DAEMON: &str = "\
Examples:
  # As systemd runs it (dist/veer.service)
  veer daemon --config /etc/veer/veer.toml

  # A second instance on its own state, pins, socket and metrics port
  veer --socket /run/veer-b.sock daemon --config b.toml --state-dir /var/lib/veer-b \\
       --pin-dir /sys/fs/bpf/veer-b --metrics 127.0.0.1:9465

  # A node of a fleet: the services come from etcd ([source] in the file says the same)
  veer daemon --source etcd --etcd-endpoints https://etcd1.example.net:2379 --node edge-fra-1";

/// `veer validate`.
pub const VALIDATE: &str = "\
Examples:
  # Check a file before installing it; exit 1 lists every problem with its line
  veer validate -f veer.toml

  # The problems as data
  veer validate -f veer.toml -o json";

/// `veer apply`.
pub const APPLY: &str = "\
Examples:
  # Make the file the desired state (a no-op when it is in force)
  veer apply -f /etc/veer/veer.toml --reason \"add backend 198.51.100.13\"

  # See what it would change first, changing nothing
  veer apply -f /etc/veer/veer.toml --dry-run";

/// `veer diff`.
pub const DIFF: &str = "\
Examples:
  # What applying the file would change: groups, weights, backends, pins
  veer diff -f /etc/veer/veer.toml

  # As data: \"changed\" says whether anything would
  veer diff -f /etc/veer/veer.toml -o json";

/// `veer status`.
pub const STATUS: &str = "\
Examples:
  veer status
  veer status web -o json

  # The daemon is down: read the pinned maps directly
  veer status --offline";

/// `veer shift`.
pub const SHIFT: &str = "\
Examples:
  veer shift web v1=90 v2=10
  veer shift web v2=12.5 --reason \"ticket 42\"

  # A dual-stack pair in one revision
  veer shift web,web6 v1=50 v2=50

  # What it would change, changing nothing
  veer shift web v1=0 v2=100 --dry-run

  # The whole fleet: the fleet's config in etcd (every node follows it)
  veer shift web v1=90 v2=10 --fleet --etcd-endpoints https://etcd1.example.net:2379";

/// `veer drain`.
pub const DRAIN: &str = "\
Examples:
  # Stop new connections to v1 and wait for its last flow (exit 3 after the timeout)
  veer drain web v1 --wait --timeout 10m

  veer drain web v1 --dry-run";

/// `veer pin`.
pub const PIN: &str = "\
Examples:
  # Our office always gets v2
  veer pin web 203.0.113.0/24 v2 --reason \"office dogfooding\"

  # One client: a bare address is a /32 (or /128)
  veer pin web 203.0.113.7 v2";

/// `veer unpin`.
pub const UNPIN: &str = "\
Examples:
  veer unpin web 203.0.113.0/24
  veer unpin web 203.0.113.7 --dry-run";

/// `veer history`.
pub const HISTORY: &str = "\
Examples:
  veer history
  veer history web -o json";

/// `veer rollback`.
pub const ROLLBACK: &str = "\
Examples:
  # Back to the revision before the live one
  veer rollback --reason \"v2 errors\"

  # Only web, as it was at revision 12, after a look at what that changes
  veer rollback web --to 12 --dry-run
  veer rollback web --to 12";

/// `veer flows`.
pub const FLOWS: &str = "\
Examples:
  veer flows web --limit 20
  veer flows --backend 198.51.100.11:8080 -o json";

/// `veer rollout`.
pub const ROLLOUT: &str = "\
Examples:
  veer rollout start web --to v2 --steps 1,10,50,100 --pause 1m --wait
  veer rollout status web --watch
  veer rollout promote web
  veer rollout retry web";

/// `veer rollout start`.
pub const ROLLOUT_START: &str = "\
Examples:
  # Defaults: steps 1,5,25,50,100, 30s each, rolled back above 1% failures
  veer rollout start web --to v2

  # Follow it live; exit 0 when it completes, 1 when it is rolled back
  veer rollout start web --to v2 --steps 5,50,100 --pause 2m --min-flows 100 --wait

  # With a gate checked at the end of every step
  veer rollout start web --to v2 --gate 'http://127.0.0.1:8081/ready'";

/// `veer rollout status`.
pub const ROLLOUT_STATUS: &str = "\
Examples:
  veer rollout status web

  # Attach from any terminal (again after a detach); one JSON object per change with -o json
  veer rollout status web --watch
  veer rollout status web --watch -o json";

/// `veer rollout pause`.
pub const ROLLOUT_PAUSE: &str = "\
Examples:
  veer rollout pause web --reason \"checking dashboards\"";

/// `veer rollout resume`.
pub const ROLLOUT_RESUME: &str = "\
Examples:
  veer rollout resume web";

/// `veer rollout abort`.
pub const ROLLOUT_ABORT: &str = "\
Examples:
  # Restore the weights from before the rollout
  veer rollout abort web --reason \"latency\"";

/// `veer rollout promote`.
pub const ROLLOUT_PROMOTE: &str = "\
Examples:
  # End this step's pause now (it still needs its new flows and gates)
  veer rollout promote web

  # Straight to 100%: the last step's new flows and gates are still checked
  veer rollout promote web --full";

/// `veer rollout retry`.
pub const ROLLOUT_RETRY: &str = "\
Examples:
  # After a rollback: start the same plan again from the restored weights
  veer rollout retry web --reason \"fixed in v2.0.1\"";

/// `veer teardown`.
pub const TEARDOWN: &str = "\
Examples:
  systemctl stop veer && veer teardown

  # Everything, revisions included
  veer teardown --force --purge-state /var/lib/veer";

/// `veer completions`.
pub const COMPLETIONS: &str = "\
Examples:
  veer completions bash > /usr/share/bash-completion/completions/veer
  veer completions zsh > /usr/local/share/zsh/site-functions/_veer
  veer completions fish > /usr/share/fish/vendor_completions.d/veer.fish";

/// `veer man`.
pub const MAN: &str = "\
Examples:
  veer man --dir /usr/local/share/man/man1";

/// `veer version`.
pub const VERSION: &str = "\
Examples:
  veer version -o json";

/// `veer fleet`.
pub const FLEET: &str = "\
Examples:
  # Where every node is: config applied, lag, health, errors, rollout step
  export VEER_ETCD_ENDPOINTS=https://etcd1.example.net:2379
  veer fleet status

  # A rollout of web to v2 across the fleet, in waves of nodes
  veer fleet rollout start web --to v2 --waves 1,25%,100% --wait";

/// `veer fleet status`.
pub const FLEET_STATUS: &str = "\
Examples:
  veer fleet status --etcd-endpoints https://etcd1.example.net:2379
  veer fleet status --node edge-fra-1 -o json";

/// `veer fleet history`.
pub const FLEET_HISTORY: &str = "\
Examples:
  # The versions of the fleet's config etcd still holds, newest first
  veer fleet history --limit 10

  # Then go back to one of them
  veer rollback --fleet --to 4217";

/// `veer fleet rollout`.
pub const FLEET_ROLLOUT: &str = "\
Examples:
  veer fleet rollout start web --to v2 --canary edge-fra-1 --waves 1,25%,100%
  veer fleet rollout status web
  veer fleet rollout abort web --reason \"errors on v2\"";

/// `veer fleet rollout start`.
pub const FLEET_ROLLOUT_START: &str = "\
Examples:
  # Canary node first, then a quarter of the fleet, then all; each node steps 1, 25, 100
  veer fleet rollout start web --to v2 --canary edge-fra-1 --waves 1,25%,100% \\
       --steps 1,25,100 --pause 1m

  # Skip a node that stops reporting instead of rolling the fleet back, and wait for the end
  veer fleet rollout start web --to v2 --on-missing-node skip --wait";

/// `veer fleet rollout status`.
pub const FLEET_ROLLOUT_STATUS: &str = "\
Examples:
  veer fleet rollout status web
  veer fleet rollout status web -o json";

/// `veer fleet rollout pause`.
pub const FLEET_ROLLOUT_PAUSE: &str = "\
Examples:
  veer fleet rollout pause web --reason \"looking at v2's latency\"";

/// `veer fleet rollout resume`.
pub const FLEET_ROLLOUT_RESUME: &str = "\
Examples:
  veer fleet rollout resume web";

/// `veer fleet rollout abort`.
pub const FLEET_ROLLOUT_ABORT: &str = "\
Examples:
  # Every node that started restores its weights from before the rollout
  veer fleet rollout abort web --reason \"errors on v2\"";
