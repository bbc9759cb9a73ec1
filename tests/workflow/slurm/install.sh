#!/bin/sh
# Install a single-node Slurm (Debian packages) for tests/workflow/test_slurm.py; idempotent.
# Needs root and apt. tests/workflow/test_slurm.py runs it itself when slurmctld/slurmd/sbatch/munged
# are missing (unless PRUNEBENCH_SLURM_INSTALL=0); CI may also run it up front.
set -eu
need=""
for b in slurmctld slurmd sbatch squeue munged; do
    command -v "$b" >/dev/null 2>&1 || need=1
done
[ -z "$need" ] && { echo "slurm: already installed ($(slurmctld -V))"; exit 0; }
[ "$(id -u)" = 0 ] || { echo "slurm: not root, cannot install" >&2; exit 2; }
command -v apt-get >/dev/null 2>&1 || { echo "slurm: no apt-get, cannot install" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
pkgs="slurmctld slurmd slurm-client munge"
# policy-rc.d: the packages' maintainer scripts must not start (or fail to start) services
prc=/usr/sbin/policy-rc.d
own_prc=""
if [ ! -e "$prc" ]; then printf '#!/bin/sh\nexit 101\n' > "$prc"; chmod +x "$prc"; own_prc=1; fi
trap 'if [ -n "$own_prc" ]; then rm -f "$prc"; fi' EXIT
apt-get install -y -q --no-install-recommends $pkgs || {
    apt-get update -q && apt-get install -y -q --no-install-recommends $pkgs; }
echo "slurm: installed ($(slurmctld -V))"
