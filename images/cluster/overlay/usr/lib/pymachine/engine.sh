#!/bin/sh
# A cluster node's engine, supervised by the init (pmnode.py) in place of the guest agent: containerd, then
# dockerd on it. dockerd would spawn containerd itself but gives it a fixed 60 s to come up, which a TCG guest
# on a busy host overruns (dockerd exits, is respawned, and starts over); waiting here has no deadline.
set -u
sock=/run/containerd/containerd.sock
if ! pgrep -x containerd >/dev/null; then
    rm -f "$sock"
    containerd --config /etc/pymachine/containerd.toml --log-level warn &
fi
while [ ! -S "$sock" ]; do
    pgrep -x containerd >/dev/null || { echo "containerd exited"; exit 1; }
    sleep 0.5
done
# No TCP listener (dockerd would wait 15 s for an unauthenticated one): the host reaches the socket over SSH.
exec /usr/sbin/dockerd --containerd "$sock" \
    -H unix:///run/pymachine/docker.sock -H unix:///var/run/docker.sock --log-level warn
