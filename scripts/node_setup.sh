#!/usr/bin/env bash
# Set up one cluster node (cluster.yaml's setup_commands): what a bare Ubuntu/Debian node
# lacks, then the same install as the README (`make install`: .venv from constraints.txt).
# Idempotent: a second run installs nothing that is there and reinstalls the project only
# when pyproject.toml or constraints.txt changed (the Makefile's stamp).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "node_setup.sh: $*" >&2; exit 1; }

# `ray up` copies file_mounts sources relative to the directory it was started in: a copy
# started elsewhere is not this project. Say so instead of installing something else.
grep -qs '^name = "sevlm-sweeps"' "$REPO/pyproject.toml" || \
    die "$REPO is not the sevlm-sweeps project: run 'ray up cluster.yaml' from the project's folder"

# System packages: python3.11 with venv/ensurepip, make, a headless JRE (every
# evaluation runs Java: pycocoevalcap's PTB tokenizer, METEOR or not) and tmux.
need=()
command -v python3.11 >/dev/null || need+=(python3.11)
python3.11 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3.11-venv)
command -v make >/dev/null || need+=(make)
command -v java >/dev/null || need+=(default-jre-headless)
command -v tmux >/dev/null || need+=(tmux)  # `ray exec --tmux`: a driver that outlives the ssh session
if ((${#need[@]})); then
    sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo -n)
    echo "installing ${need[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" || \
        die "apt-get could not install ${need[*]} (Ubuntu 24.04 has no python3.11: add the deadsnakes PPA first)"
fi

# For login shells (what `ray up`, `ray exec` and `ray down` run): the project's `ray`
# first on PATH, because `ray down` runs a bare `ray stop`, which must find Ray and stop
# the MLflow server too (scripts/bin/ray); and Ray's token authentication for every Ray
# command and driver.
line="export PATH=\"$REPO/scripts/bin:\$PATH\" RAY_AUTH_MODE=token  # sevlm-sweeps"
profile="$HOME/.profile"
for f in "$HOME/.bash_profile" "$HOME/.bash_login"; do  # a login bash reads only the first of these
    [[ -f "$f" ]] && { profile="$f"; break; }
done
grep -qsF "$line" "$profile" || echo "$line" >>"$profile"

make -C "$REPO" install PYTHON=python3.11
