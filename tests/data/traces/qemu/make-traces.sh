#!/bin/bash
# Regenerates the real QEMU traces of this corpus (run as root on a host with QEMU 7.2,
# strace 6.x, /dev/kvm group kvm 0660 and a user qemu = 107 in group kvm).
# Usage: make-traces.sh OUTDIR   (then copy the *.strace files you want here)
set -u
out=${1:?usage: make-traces.sh OUTDIR}
mkdir -p "$out" && chmod 1777 "$out" && cd "$out" || exit 1
Q="qemu-system-x86_64 -nodefaults -display none -m 32 -no-user-config"
S="strace -f -tt -T -yy -s 256"
as_qemu="setpriv --reuid 107 --regid 107 --init-groups"
as_qemu_nokvm="setpriv --reuid 107 --regid 107 --clear-groups"

$as_qemu_nokvm $S -o kvm-denied.strace $Q -accel kvm 2>qemu.err
$S -o disk-missing.strace $Q -accel tcg \
  -drive file=/var/lib/vd-missing/disk0.qcow2,format=qcow2,if=virtio 2>qemu.err
rm -f disk000.img; truncate -s 1M disk000.img; chmod 000 disk000.img
$as_qemu $S -o disk-denied.strace $Q -accel tcg \
  -blockdev driver=file,node-name=d0,filename="$out/disk000.img" \
  -device virtio-blk-pci,drive=d0 2>qemu.err
$S -o bios-missing.strace $Q -accel tcg -bios /nonexistent/OVMF_CODE.fd 2>qemu.err

# hugetlbfs with no huge pages reserved: the mmap of guest RAM fails with ENOMEM
mkdir -p /mnt/vdhuge && (mountpoint -q /mnt/vdhuge || mount -t hugetlbfs none /mnt/vdhuge)
$S -o hugepages.strace $Q -accel tcg -mem-path /mnt/vdhuge -mem-prealloc 2>qemu.err
# more guest RAM than the host can map: the mmap of 64 TiB fails with ENOMEM
$S -o guest-ram-enomem.strace $Q -m 64T -accel tcg 2>qemu.err
# no rule matches: only QEMU's own message explains the exit
$S -o qemu-error.strace $Q -accel tcg -machine no-such-machine 2>qemu.err
(ulimit -l 0; $as_qemu $S -o memlock.strace $Q -accel tcg -overcommit mem-lock=on 2>qemu.err)

# no /dev/vhost-net on this host: QEMU 7.2 warns, then aborts on an assertion
$S -o vhost.strace $Q -accel tcg \
  -netdev tap,id=n0,ifname=vdtap0,script=no,downscript=no,vhost=on \
  -device virtio-net-pci,netdev=n0 2>qemu.err
$as_qemu $S -o tap-denied.strace $Q -accel tcg \
  -netdev tap,id=n0,ifname=vdtap1,script=no,downscript=no \
  -device virtio-net-pci,netdev=n0 2>qemu.err

# a crash: a paused QEMU killed by SIGSEGV, with core dumps allowed
(ulimit -c unlimited; $S -o crash-segv.strace $Q -accel tcg -S 2>qemu.err & sleep 1.5;
 kill -SEGV "$(pgrep -n -f 'qemu-system-x86_64 -nodefaults -display none -m 32')"; wait)
rm -f core core.*

# seccomp: spawning is denied, and the tap script makes QEMU fork: killed by SIGSYS
$S -o seccomp.strace $Q -accel tcg -sandbox on,spawn=deny \
  -netdev tap,id=n0,ifname=vdtap2,script=/bin/true,downscript=no \
  -device virtio-net-pci,netdev=n0 2>qemu.err
# a KVM ioctl failure: with 8 fds allowed KVM_CREATE_VM gets EMFILE
(ulimit -n 8; $S -o kvm-create-vm.strace $Q -accel kvm 2>qemu.err)

# healthy start and clean quit over QMP, with a master key file and a secret sent over
# the monitor (read one byte per recvmsg): the redaction corpus
printf 'vd-MASTER-KEY-0123456789abcdefXY' > master-key.aes
rm -f qmp.sock
$S -o qmp-secret.strace $Q -accel tcg -S \
  -object secret,id=masterKey0,format=raw,file="$out/master-key.aes" \
  -qmp unix:"$out/qmp.sock",server=on,wait=off 2>qemu.err &
python3 - "$out/qmp.sock" <<'PY'
import json, socket, sys, time
for _ in range(100):
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); break
    except OSError:
        time.sleep(0.1)
f = s.makefile("rwb", buffering=0)
def cmd(obj):
    f.write(json.dumps(obj).encode() + b"\n")
    while True:
        reply = json.loads(f.readline())
        if "event" not in reply:
            return reply
print(f.readline())
print(cmd({"execute": "qmp_capabilities"}))
print(cmd({"execute": "object-add", "arguments": {"qom-type": "secret", "id": "s0",
           "data": "hunter2-SECRET"}}))
print(cmd({"execute": "quit"}))
PY
wait
rm -f qmp.sock

# a healthy KVM guest with two vCPUs, stopped by SIGTERM after 3 seconds (QEMU exits 0)
timeout -s TERM 3 $S -o kvm-ok.strace $Q -accel kvm -smp 2 -M q35 2>qemu.err
