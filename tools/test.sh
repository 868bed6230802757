#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# This is the test command of the README, and what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: a real OpenSSH server for the SSH profiling tests, and the real
# Fashion-MNIST IDX files (/usr/share/datasets/fashion-mnist) for the dataset tests.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-server dataset-fashion-mnist >/dev/null
else
    echo "not root or no apt-get: skipping system packages (SSH and Fashion-MNIST tests will skip)" >&2
fi

# torch first, pinned, so that no later requirement pulls a CUDA build on a CPU machine.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[all,test]"
# The reference once-for-all implementation, only to prove our converter against it.
python -m pip install -q --no-deps ofa==0.1.0.post202307202001

python -m pytest "$@"
