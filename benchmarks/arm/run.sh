#!/usr/bin/env bash
# An ARM device's software stack on this machine: a Debian 12 (bookworm) arm64 root filesystem,
# the base of Raspberry Pi OS, run under qemu-user-static, with its own sshd on 127.0.0.1 and a
# non-root user; the runtimes pip-installed inside it as aarch64 wheels. edgenas then reaches it
# over SSH with a verified host key: `device check`, and `profile --space mbv3-tiny` with
# onnxruntime and with TFLite (ai-edge-litert).
#
# Emulated latency means nothing: this shows that the agent, the uploads, the runtimes and the
# table format work on aarch64 Python as a Pi has it. See README.md for the results.
#
# Usage (as root, from anywhere):  bash benchmarks/arm/run.sh
#   ARM_OUT=DIR       work directory (default benchmarks/arm/out, git-ignored); the root
#                     filesystem DIR/root is reused when it exists, so a second run skips
#                     debootstrap and the pip install
#   ARM_MIRROR=URL    Debian mirror (default http://deb.debian.org/debian)
#   ARM_PROFILE_ARGS  extra arguments for `edgenas profile` (default: --resolutions 24 --calibrate 6
#                     --warmup 2 --runs 5)
# Everything it mounts and starts is undone on exit, on success and on failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="${ARM_OUT:-$HERE/out}"
ROOT="$OUT/root"
MIRROR="${ARM_MIRROR:-http://deb.debian.org/debian}"
PROFILE_ARGS=(${ARM_PROFILE_ARGS:---resolutions 24 --calibrate 6 --warmup 2 --runs 5})
DUSER=edge                     # the device's non-root login
VENV=/opt/edgenas-venv         # inside the root
LOG="$OUT/steps.log"
mkdir -p "$OUT"

[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (debootstrap, mounts, chroot)" >&2; exit 2; }

t0=0
step() {  # step NAME: print and log the time the previous step took, then announce NAME
    local now; now=$(date +%s)
    if [ -n "${CUR:-}" ]; then printf '%-28s %5ss\n' "$CUR" "$((now - t0))" | tee -a "$LOG"; fi
    CUR="$1"; t0=$now
    [ -n "$CUR" ] && echo "== $CUR"
    return 0
}
in_root() { chroot "$ROOT" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

SSHD_PID=""
cleanup() {
    set +e
    if [ -n "$SSHD_PID" ] && kill -0 "$SSHD_PID" 2>/dev/null; then
        kill "$SSHD_PID"; wait "$SSHD_PID" 2>/dev/null; echo "stopped sshd (pid $SSHD_PID)"
    fi
    # any session processes sshd forked that are still alive inside the root
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && kill "${p#/proc/}" 2>/dev/null
    done
    for m in "$ROOT/dev/pts" "$ROOT/dev" "$ROOT/proc"; do
        mountpoint -q "$m" && umount "$m"
    done
    # lazy unmount as the last resort (a process we did not start may still hold one)
    for m in "$ROOT/dev/pts" "$ROOT/dev" "$ROOT/proc"; do mountpoint -q "$m" && umount -l "$m"; done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

: > "$LOG"
echo "log: $LOG"

step "host packages"
if ! command -v debootstrap >/dev/null || [ ! -e /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support debootstrap
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || { echo "run.sh: binfmt qemu-aarch64 is not enabled" >&2; exit 1; }

step "debootstrap arm64 bookworm"
if [ -e "$ROOT/etc/debian_version" ] && [ -x "$ROOT/usr/sbin/sshd" ] && [ -x "$ROOT/usr/bin/python3" ]; then
    echo "reusing $ROOT"
else
    debootstrap --arch=arm64 --include=python3,python3-venv,python3-pip,openssh-server,ca-certificates \
        bookworm "$ROOT" "$MIRROR"
fi

step "mounts"
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
# NOT /sys: onnxruntime's cpuinfo reads it and segfaults under qemu-user
in_root uname -m
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/edgenas-host-ca.crt"   # the host's CA bundle, for pip

step "pip install runtimes"
if [ ! -x "$ROOT$VENV/bin/python" ]; then in_root python3 -m venv "$VENV"; fi
if ! in_root "$VENV/bin/python" -c 'import numpy, onnxruntime, ai_edge_litert.interpreter' 2>/dev/null; then
    in_root env PIP_CERT=/etc/edgenas-host-ca.crt REQUESTS_CA_BUNDLE=/etc/edgenas-host-ca.crt \
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q numpy onnxruntime ai-edge-litert
fi
in_root "$VENV/bin/python" - <<'EOF' | tee "$OUT/versions.txt"
import platform, numpy, onnxruntime, importlib.metadata as md
print("machine", platform.machine())
print("python", platform.python_version())
print("numpy", numpy.__version__)
print("onnxruntime", onnxruntime.__version__)
print("ai-edge-litert", md.version("ai-edge-litert"))
import ai_edge_litert.interpreter  # noqa: F401  (imports: the wheel works)
EOF
in_root cat /etc/debian_version | sed 's/^/debian /' | tee -a "$OUT/versions.txt"

step "user, keys, sshd config"
in_root id -u "$DUSER" >/dev/null 2>&1 || in_root useradd -m -s /bin/bash "$DUSER"
in_root usermod -p '*' "$DUSER"          # not locked ('!'), but no password: key auth only
[ -e "$ROOT/etc/ssh/ssh_host_ed25519_key" ] || in_root ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
[ -e "$OUT/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C edgenas-arm -f "$OUT/id_ed25519"
install -d -m 700 "$ROOT/home/$DUSER/.ssh"
install -m 600 "$OUT/id_ed25519.pub" "$ROOT/home/$DUSER/.ssh/authorized_keys"
in_root chown -R "$DUSER:$DUSER" "/home/$DUSER/.ssh"
mkdir -p "$ROOT/run/sshd"
cat > "$ROOT/etc/ssh/sshd_edgenas.conf" <<EOF
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd-edgenas.pid
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers $DUSER
StrictModes no
UsePAM no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF

step "start sshd"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chroot "$ROOT" /usr/sbin/sshd -D -e -f /etc/ssh/sshd_edgenas.conf -p "$PORT" 2> "$OUT/sshd.log" &
SSHD_PID=$!
for _ in $(seq 60); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 1).close()" 2>/dev/null && break
    kill -0 "$SSHD_PID" 2>/dev/null || { cat "$OUT/sshd.log" >&2; exit 1; }
    sleep 1
done
echo "sshd pid $SSHD_PID on 127.0.0.1:$PORT"
# known_hosts from the key read out of the root itself: verified, not trusted on first use
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$ROOT/etc/ssh/ssh_host_ed25519_key.pub")" > "$OUT/known_hosts"

for rt in onnxruntime tflite; do
    if [ $rt = onnxruntime ]; then opts="  providers: [CPUExecutionProvider]"; else opts="  delegate: xnnpack
  interpreter: ai_edge_litert"; fi
    cat > "$OUT/arm64-qemu-$rt.yaml" <<EOF
# written by benchmarks/arm/run.sh: Debian 12 arm64 under qemu-user-static, sshd on 127.0.0.1:$PORT
name: arm64-qemu
description: Debian 12 arm64 root (Raspberry Pi OS base) under qemu-user-static, $rt
transport: ssh
ssh:
  host: 127.0.0.1
  port: $PORT
  user: $DUSER
  identity_file: $OUT/id_ed25519
  known_hosts: $OUT/known_hosts
  connect_timeout: 30
  command_timeout: 900
python: $VENV/bin/python
runtime: $rt
runtime_options:
$opts
threads: 1
warmup: 2
runs: 5
workdir: /tmp
EOF
done

edgenas() { (cd "$OUT" && PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" python3 -m edgenas "$@"); }

step "device check onnxruntime"
edgenas device check "$OUT/arm64-qemu-onnxruntime.yaml" | tee "$OUT/check-onnxruntime.txt"
step "device check tflite"
edgenas device check "$OUT/arm64-qemu-tflite.yaml" | tee "$OUT/check-tflite.txt"

for rt in onnxruntime tflite; do
    step "profile mbv3-tiny $rt"
    edgenas profile "$OUT/arm64-qemu-$rt.yaml" --space mbv3-tiny "${PROFILE_ARGS[@]}" \
        --out "$OUT/arm64-qemu-$rt-mbv3-tiny.yaml" 2>&1 | tee "$OUT/profile-$rt.txt"
done

step "summary"
python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import sys, yaml, pathlib
out = pathlib.Path(sys.argv[1])
for rt in ("onnxruntime", "tflite"):
    t = yaml.safe_load((out / f"arm64-qemu-{rt}-mbv3-tiny.yaml").read_text())
    h = t["header"]
    fp = h["device"]["fingerprint"]
    cal = h.get("calibration") or {}
    print(f"{rt}: {len(t['ops'])} ops | profile_key {h['device'].get('profile_key')} | machine {fp.get('machine')}"
          f" | cpu {fp.get('cpu_model')} | python {fp.get('python')} | numpy {fp.get('numpy')}"
          f" | {h.get('runtime')} {h.get('runtime_version')} | calibration scale {cal.get('scale')} offset {cal.get('offset_ms')}")
EOF
step ""
echo "done; tables and logs in $OUT"
