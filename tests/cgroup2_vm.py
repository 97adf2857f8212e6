"""Run a command on a real cgroup v2 host: a throw-away Linux VM (qemu) that sees this machine's files read-only.

This machine binds the memory controller to its cgroup v1 hierarchy, so no cgroup2 mount here can ever have
one (not in a new user, mount or cgroup namespace either). A VM booting the distribution's kernel mounts
cgroup2 alone, with every controller. The VM's root is a tiny busybox initramfs that mounts this machine's
``/`` read-only over 9p, then chroots into it: the same venv, the same checkout. It has 1 GiB of RAM of its
own, so whatever runs in it cannot take more from this machine. Slow (software emulation: KVM is not usable
here), about 20 s to boot.

``vm_skip_reason()`` says why no VM can be started (missing qemu, kernel image, 9p modules or a static
busybox); ``run_in_vm(script, workdir)`` returns what the script printed.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

QEMU = "qemu-system-x86_64"
MODULES = [  # load order: each after what it depends on
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
    "9pnet", "9pnet_virtio", "netfs", "fscache", "9p",
]  # fmt: skip
BEGIN, END = "KS-VM-BEGIN", "KS-VM-END"

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in {" ".join(MODULES)}; do [ -e /m/$m.ko ] && insmod /m/$m.ko; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host || echo "{END} 9p mount failed"
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup
mkdir -p /host/dev/shm; mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
echo "{BEGIN}"
chroot /host /bin/sh "$(sed -n 's/.*ks_run=\\([^ ]*\\).*/\\1/p' /proc/cmdline)"
echo "{END} rc=$?"
poweroff -f
"""


def _kernel() -> tuple[str, str] | None:
    """Return (vmlinuz, its modules folder) for an installed distribution kernel, or None."""
    for image in sorted(glob.glob("/boot/vmlinuz-*"), reverse=True):
        modules = "/lib/modules/" + image.split("vmlinuz-", 1)[1]
        if os.path.isdir(modules):
            return image, modules
    return None


def _module_files(modules: str) -> dict[str, str]:
    found = {}
    for root, _, files in os.walk(os.path.join(modules, "kernel")):
        for name in files:
            if name.endswith(".ko") and name[:-3] in MODULES:
                found[name[:-3]] = os.path.join(root, name)
    return found


def _busybox() -> str | None:
    path = shutil.which("busybox")
    if path is None:
        return None
    probe = subprocess.run(["file", "-L", path], capture_output=True, text=True) if shutil.which("file") else None
    return path if probe is None or "statically linked" in probe.stdout or "static-pie" in probe.stdout else None


def vm_skip_reason() -> str | None:
    """Return why no cgroup v2 VM can be started on this machine (None: it can)."""
    if shutil.which(QEMU) is None:
        return f"no {QEMU} (Debian: apt-get install qemu-system-x86)"
    kernel = _kernel()
    if kernel is None:
        return "no kernel image in /boot with its modules (Debian: apt-get install linux-image-amd64)"
    missing = {"9pnet", "9pnet_virtio", "9p"} - set(_module_files(kernel[1]))
    if missing:
        return f"the kernel in /boot has no 9p modules ({', '.join(sorted(missing))})"
    if _busybox() is None:
        return "no static busybox for the VM's first process (Debian: apt-get install busybox-static)"
    return None


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """Return a gzipped newc cpio archive of (name, mode, data) entries (directories have empty data)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        out.write(b"\0" * (-(110 + len(raw)) % 4) + data + b"\0" * (-len(data) % 4))
    return gzip.compress(out.getvalue(), compresslevel=1)


def run_in_vm(script: str, workdir: Path, timeout: float = 600) -> str:
    """Return what ``script`` (shell, run as root on the VM's cgroup v2 host) printed; raises if it did not end."""
    image, modules = _kernel()  # type: ignore[misc]
    directory = stat.S_IFDIR | 0o755
    entries: list[tuple[str, int, bytes]] = [(d, directory, b"") for d in ("bin", "m", "proc", "sys", "dev", "host")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, Path(_busybox() or "").read_bytes()))
    entries += [(f"m/{n}.ko", stat.S_IFREG | 0o644, Path(p).read_bytes()) for n, p in _module_files(modules).items()]
    entries.append(("init", stat.S_IFREG | 0o755, INIT.encode()))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "initramfs.gz").write_bytes(_cpio(entries))
    (workdir / "run.sh").write_text(script)
    argv = [
        QEMU, "-accel", "tcg", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot",
        "-kernel", image, "-initrd", str(workdir / "initramfs.gz"),
        "-append", f"console=ttyS0 quiet panic=-1 ks_run={workdir / 'run.sh'}",
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    console = done.stdout.decode(errors="replace").replace("\r", "")
    if BEGIN not in console or END not in console:
        raise RuntimeError(f"the VM did not run the script to its end: {console[-2000:]}")
    return console.split(BEGIN, 1)[1].split(END, 1)[0]
