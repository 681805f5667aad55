#!/usr/bin/env bash
# The cluster's shared folder (cluster.yaml: /shared/sevlm), checked on every node.
#   shared_folder.sh mark DIR    on the head (head_setup_commands): write DIR's marker
#   shared_folder.sh check DIR   on a worker (worker_setup_commands): fail unless DIR holds
#                                the marker of this cluster's head
# A worker whose mount failed would otherwise write checkpoints, caches and the synthetic
# data to its local disk, where no other node sees them. The marker names the head and
# holds a hash of Ray's token (copied to the workers by cluster_synced_files), so a stale
# marker in a local folder of the same name, left by another cluster, does not pass.
set -euo pipefail
die() { echo "shared_folder.sh: $*" >&2; exit 1; }
[[ $# == 2 && ( $1 == mark || $1 == check ) ]] || die "usage: shared_folder.sh mark|check DIR"
dir="$2"
marker="$dir/.sevlm-cluster"
token="$HOME/.ray/auth_token"
[[ -s "$token" ]] || die "no Ray token at $token (the head makes it; cluster_synced_files copies it)"
token_hash="$(sha256sum "$token" | cut -d' ' -f1)"

if [[ $1 == mark ]]; then
    mkdir -p "$dir" || die "cannot create $dir: is the shared folder mounted on the head?"
    printf 'head=%s\ntoken_sha256=%s\n' "$(hostname)" "$token_hash" >"$marker.tmp.$$"
    mv -f "$marker.tmp.$$" "$marker"
    echo "shared folder $dir marked by the head"
    exit 0
fi

[[ -f "$marker" ]] || die "$dir has no marker from the head ($marker): the shared folder is not mounted \
on this node ($(hostname)). Mount it (e.g. the NFS export at $(dirname "$dir")) and run ray up again."
grep -qx "token_sha256=$token_hash" "$marker" || die "$dir holds another cluster's marker ($(grep '^head=' "$marker")): \
this node ($(hostname)) does not see the head's shared folder"
probe="$dir/.write-test.$(hostname).$$"
touch "$probe" 2>/dev/null || die "$dir is mounted read-only on $(hostname): trials write checkpoints there"
rm -f "$probe"
echo "shared folder $dir: the head's ($(grep '^head=' "$marker" | cut -d= -f2)), writable"
