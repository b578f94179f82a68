"""The graph node instance's user data: a bash script, built here as text.

On first boot (cloud-init) it

1. reads the instance id and private address from IMDSv2 (tokens only);
2. formats (once) and mounts the data volume at `DATA_MOUNT` (by label, so
   a reboot mounts it again from /etc/fstab);
3. installs Python 3.12 from the Amazon Linux 2023 repositories, downloads
   the node software asset (`GraphNodeSoftware`) with the instance role and
   installs it with its `graph` extra into a virtualenv, pinned by the
   project's lock (dependencies from the package index);
4. writes the node's environment (`ENV_FILE`: `node_environment`, every
   variable of `beatless.graphs.node.settings` it needs). It names the API
   key secret by ARN only: the node fetches the key from Secrets Manager;
5. starts `beatless graph-node` as the systemd service `NODE_SERVICE` (user
   `beatless`, restarted on failure, SIGTERM with time to finish requests and
   close every database), and `WATCH_SERVICE`, which polls IMDS for the Auto
   Scaling target lifecycle state: at `Terminated` (the termination lifecycle
   hook holds the instance) it stops the node cleanly and completes the hook
   with CONTINUE, so termination does not wait for the hook's timeout.

A failure in any step marks the instance unhealthy in its Auto Scaling group,
which replaces it (a node that never started holds no graphs).
"""

from __future__ import annotations

from collections.abc import Mapping

DATA_DEVICE = "/dev/xvdb"  # the launch template's data volume (ec2-utils links NVMe names to it)
DATA_LABEL = "beatless-data"
DATA_MOUNT = "/var/lib/beatless"
GRAPH_DATA_DIR = f"{DATA_MOUNT}/graphs"
ENV_FILE = "/etc/beatless/graph-node.env"
NODE_SERVICE = "beatless-graph-node.service"
WATCH_SERVICE = "beatless-lifecycle-watch.service"
INSTALL_DIR = "/opt/beatless"
# Shell variables the script sets from IMDS before it writes the environment.
INSTANCE_ID_VARIABLE = "${INSTANCE_ID}"
PRIVATE_IP_VARIABLE = "${PRIVATE_IP}"
# The node's uvicorn waits up to 60 s for running requests on SIGTERM, then closes the databases.
STOP_TIMEOUT_SECONDS = 90


def node_environment(
    *,
    port: int,
    capacity: int,
    api_key_secret_arn: str,
    asg_name: str,
    instance_table: str,
    graph_table: str,
    region: str,
) -> dict[str, str]:
    """The node's environment (`beatless.graphs.node.settings.NodeSettings.from_env`)."""
    return {
        "GRAPH_DATA_DIR": GRAPH_DATA_DIR,
        "GRAPH_NODE_HOST": "0.0.0.0",  # reachable from the graph clients' security group only
        "GRAPH_NODE_PORT": str(port),
        "GRAPH_NODE_ENDPOINT": f"http://{PRIVATE_IP_VARIABLE}:{port}",
        "GRAPH_NODE_CAPACITY": str(capacity),
        "GRAPH_API_KEY_SECRET_ARN": api_key_secret_arn,
        "INSTANCE_ID": INSTANCE_ID_VARIABLE,
        "GRAPH_ASG_NAME": asg_name,
        "INSTANCE_REGISTRY_TABLE": instance_table,
        "GRAPH_REGISTRY_TABLE": graph_table,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


_SCRIPT = r"""#!/bin/bash
# Beatless graph node: first-boot set-up (infra/components/graph_node_user_data.py).
set -euo pipefail
exec > >(tee -a /var/log/beatless-bootstrap.log) 2>&1

imds() {
  local token
  token=$(curl -sSf -X PUT http://169.254.169.254/latest/api/token \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
  curl -sSf -H "X-aws-ec2-metadata-token: ${token}" "http://169.254.169.254/latest/meta-data/$1"
}
retry() {
  local attempt
  for attempt in 1 2 3 4 5; do
    "$@" && return 0
    echo "attempt ${attempt} failed: $*"
    sleep $((attempt * 10))
  done
  return 1
}
INSTANCE_ID=$(imds instance-id)
PRIVATE_IP=$(imds local-ipv4)
failed() {
  echo "bootstrap failed; marking ${INSTANCE_ID} unhealthy so that its group replaces it"
  aws autoscaling set-instance-health --region @@REGION@@ --instance-id "${INSTANCE_ID}" \
    --health-status Unhealthy --no-should-respect-grace-period || true
}
trap failed ERR

# The data volume: formatted once, mounted by label.
for _ in $(seq 1 60); do [ -e @@DATA_DEVICE@@ ] && break; sleep 2; done
if ! blkid @@DATA_DEVICE@@ >/dev/null 2>&1; then mkfs.xfs -L @@DATA_LABEL@@ @@DATA_DEVICE@@; fi
mkdir -p @@DATA_MOUNT@@
grep -q 'LABEL=@@DATA_LABEL@@ ' /etc/fstab || \
  echo 'LABEL=@@DATA_LABEL@@ @@DATA_MOUNT@@ xfs defaults,noatime,nofail 0 2' >> /etc/fstab
mountpoint -q @@DATA_MOUNT@@ || mount @@DATA_MOUNT@@

# Python 3.12 and the node software (the graph extra, pinned by the project's lock).
retry dnf install -y python3.12 python3.12-pip unzip
id beatless >/dev/null 2>&1 || useradd --system --home-dir @@DATA_MOUNT@@ --shell /sbin/nologin beatless
mkdir -p @@GRAPH_DATA_DIR@@
chown -R beatless:beatless @@DATA_MOUNT@@
rm -rf @@INSTALL_DIR@@/src && mkdir -p @@INSTALL_DIR@@/src
retry aws s3 cp --region @@REGION@@ "@@SOFTWARE_URL@@" @@INSTALL_DIR@@/node.zip
unzip -q -o @@INSTALL_DIR@@/node.zip -d @@INSTALL_DIR@@/src
python3.12 -m venv @@INSTALL_DIR@@/venv
retry @@INSTALL_DIR@@/venv/bin/pip install --no-cache-dir \
  --constraint @@INSTALL_DIR@@/src/requirements.lock "@@INSTALL_DIR@@/src[graph]"

# The node's environment: names and ARNs only (the API key stays in Secrets Manager).
install -d -m 0755 /etc/beatless
cat > @@ENV_FILE@@ <<EOF
@@ENVIRONMENT@@
EOF
chmod 0644 @@ENV_FILE@@

cat > /etc/systemd/system/@@NODE_SERVICE@@ <<'EOF'
[Unit]
Description=Beatless graph node (beatless graph-node)
Wants=network-online.target
After=network-online.target
RequiresMountsFor=@@DATA_MOUNT@@

[Service]
User=beatless
Group=beatless
EnvironmentFile=@@ENV_FILE@@
ExecStart=@@INSTALL_DIR@@/venv/bin/beatless graph-node
Restart=always
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=@@STOP_TIMEOUT@@
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
EOF

cat > /usr/local/bin/beatless-lifecycle-watch <<'EOF'
#!/bin/bash
# Holds nothing up: when Auto Scaling terminates this instance (the termination
# lifecycle hook keeps it in Terminating:Wait), stop the node cleanly, then
# complete the hook with CONTINUE.
set -u
. @@ENV_FILE@@
imds() {
  local token
  token=$(curl -sSf -X PUT http://169.254.169.254/latest/api/token \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
  curl -sSf -H "X-aws-ec2-metadata-token: ${token}" "http://169.254.169.254/latest/meta-data/$1"
}
while true; do
  state=$(imds autoscaling/target-lifecycle-state 2>/dev/null || true)
  if [ "${state}" = "Terminated" ]; then
    systemctl stop @@NODE_SERVICE@@ || true
    aws autoscaling complete-lifecycle-action --region "${AWS_REGION}" \
      --auto-scaling-group-name "${GRAPH_ASG_NAME}" --lifecycle-hook-name @@HOOK_NAME@@ \
      --instance-id "${INSTANCE_ID}" --lifecycle-action-result CONTINUE && exit 0
  fi
  sleep 5
done
EOF
chmod 0755 /usr/local/bin/beatless-lifecycle-watch

cat > /etc/systemd/system/@@WATCH_SERVICE@@ <<'EOF'
[Unit]
Description=Beatless graph node: completes the termination lifecycle hook after a clean stop
After=@@NODE_SERVICE@@

[Service]
ExecStart=/usr/local/bin/beatless-lifecycle-watch
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF

systemctl daemon-reload
systemctl enable --now @@NODE_SERVICE@@ @@WATCH_SERVICE@@
trap - ERR
echo "graph node ${INSTANCE_ID} started at http://${PRIVATE_IP}:@@PORT@@"
"""


def user_data_script(
    *, environment: Mapping[str, str], software_url: str, region: str, hook_name: str, port: int
) -> str:
    """The script; `environment` values may be CDK tokens (they resolve in the template)."""
    for name, value in environment.items():
        if "\n" in value or "=" in name:
            raise ValueError(f"environment {name!r}: not a KEY=VALUE line")
    fill = {
        "ENVIRONMENT": "\n".join(f"{name}={value}" for name, value in environment.items()),
        "SOFTWARE_URL": software_url,
        "REGION": region,
        "HOOK_NAME": hook_name,
        "PORT": str(port),
        "DATA_DEVICE": DATA_DEVICE,
        "DATA_LABEL": DATA_LABEL,
        "DATA_MOUNT": DATA_MOUNT,
        "GRAPH_DATA_DIR": GRAPH_DATA_DIR,
        "ENV_FILE": ENV_FILE,
        "NODE_SERVICE": NODE_SERVICE,
        "WATCH_SERVICE": WATCH_SERVICE,
        "INSTALL_DIR": INSTALL_DIR,
        "STOP_TIMEOUT": str(STOP_TIMEOUT_SECONDS),
    }
    script = _SCRIPT
    for key, value in fill.items():
        script = script.replace(f"@@{key}@@", value)
    if "@@" in script:
        raise ValueError("user data: an unfilled placeholder")
    return script
