"""A tiny real guest for the QEMU sandbox: Debian's kernel plus a busybox initramfs.

The kernel comes from the Debian package that ``linux-image-amd64`` depends on (downloaded
with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into a temporary directory; /boot
is never touched). The initramfs holds busybox-static, an ``/init`` script and a handful of
kernel modules (virtio balloon for memory statistics, ACPI button and evdev so that an ACPI
power-button press powers the guest off through busybox ``acpid``).

On its serial console the guest prints the kernel's boot messages, a banner with its name
(from ``pvc.name=NAME`` on the kernel command line) and then every two seconds a status line::

    [  12.3] web1 up 12s load 0.01 mem free 61234 kB
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "BANNER_PREFIX",
    "STATUS_LINE_RE",
    "GuestImage",
    "ensure_guest_image",
    "guest_domain_xml",
    "guest_kernel_name",
]

#: The guest's banner line starts with this text, followed by its name.
BANNER_PREFIX = "pvc-tui sandbox guest"

#: Matches one status line; groups: uptime (s, one decimal), name, whole seconds, load, free kB.
STATUS_LINE_RE = re.compile(
    r"\[\s*(?P<uptime>\d+\.\d)\] (?P<name>\S+) up (?P<secs>\d+)s "
    r"load (?P<load>[\d.]+) mem free (?P<free_kb>\d+) kB"
)

# Loaded in this order (no modules.dep in the package; these have no other dependencies).
_MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/virtio/virtio_balloon.ko",
    "drivers/acpi/button.ko",
    "drivers/input/evdev.ko",
)

_INIT_SCRIPT = """#!/bin/sh
# pvc-tui sandbox guest: PID 1 of a busybox initramfs.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
name=guest
for arg in $(cat /proc/cmdline); do
  case "$arg" in pvc.name=*) name="${arg#pvc.name=}" ;; esac
done
hostname "$name"
for m in @MODULES@; do
  insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"
done
# ACPI power button (libvirt dom.shutdown()) -> /etc/acpi/PWRF/00000080 -> poweroff -f
acpid -d -c /etc/acpi &
read up idle </proc/uptime
read kernel </proc/sys/kernel/osrelease
echo
echo "@BANNER@ $name (kernel $kernel) booted in ${up}s"
echo
while :; do
  read up idle </proc/uptime
  read l1 l5 l15 rest </proc/loadavg
  free=0
  while read key value unit; do
    if [ "$key" = "MemFree:" ]; then free=$value; break; fi
  done </proc/meminfo
  printf '[%6s] %s up %ss load %s mem free %s kB\\n' "${up%?}" "$name" "${up%%.*}" "$l1" "$free"
  sleep 2
done
"""

_POWER_HANDLER = """#!/bin/sh
echo "acpid: power button pressed, powering off"
poweroff -f
"""


@dataclass(frozen=True)
class GuestImage:
    """A kernel and initramfs for direct kernel boot."""

    kernel: Path
    initrd: Path


def _init_script() -> str:
    names = " ".join(Path(m).stem for m in _MODULES)
    return _INIT_SCRIPT.replace("@MODULES@", names).replace("@BANNER@", BANNER_PREFIX)


def _image_key() -> str:
    digest = hashlib.sha256()
    for part in (_init_script(), _POWER_HANDLER, *_MODULES, "format-1"):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def guest_kernel_name(name: str) -> str:
    """The guest name as passed on the kernel command line (unsafe characters become '_')."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return safe[:63] or "guest"


def _run(args: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return proc.stdout


def _kernel_package() -> str:
    out = _run(["apt-cache", "depends", "linux-image-amd64"])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:"):
            pkg = line.split(":", 1)[1].strip()
            if re.fullmatch(r"linux-image-[0-9][A-Za-z0-9.+-]*", pkg):
                return pkg
    raise RuntimeError(f"cannot find the kernel package linux-image-amd64 depends on:\n{out}")


def _fetch_kernel(work: Path) -> tuple[Path, Path]:
    """Download and unpack the kernel package; return (vmlinuz, modules kernel/ dir)."""
    download = work / "download"
    download.mkdir()
    try:
        pkg = _kernel_package()
        _run(["apt-get", "download", "-q", pkg], cwd=download)
    except RuntimeError:
        # a fresh machine may have no package lists, or lists that name an old kernel
        _run(["apt-get", "update", "-q"])
        pkg = _kernel_package()
        _run(["apt-get", "download", "-q", pkg], cwd=download)
    debs = sorted(download.glob("*.deb"))
    if len(debs) != 1:
        raise RuntimeError(f"apt-get download {pkg} produced {debs}")
    root = work / "kernel"
    _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
    debs[0].unlink()
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
    moddirs = sorted((root / "lib" / "modules").glob("*/kernel"))
    if len(vmlinuz) != 1 or len(moddirs) != 1:
        raise RuntimeError(f"unexpected layout in {pkg}: {vmlinuz} {moddirs}")
    return vmlinuz[0], moddirs[0]


def _build_rootfs(root: Path, moddir: Path) -> None:
    for sub in ("bin", "dev", "proc", "sys", "run", "tmp", "lib/modules", "etc/acpi/PWRF"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox not found (apt-get install busybox-static)")
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in _run([busybox, "--list"]).split():
        if applet != "busybox" and re.fullmatch(r"[A-Za-z0-9_.\[\]-]+", applet):
            (root / "bin" / applet).symlink_to("busybox")
    for module in _MODULES:
        shutil.copy2(moddir / module, root / "lib" / "modules" / Path(module).name)
    init = root / "init"
    init.write_text(_init_script())
    init.chmod(0o755)
    handler = root / "etc" / "acpi" / "PWRF" / "00000080"
    handler.write_text(_POWER_HANDLER)
    handler.chmod(0o755)


def _pack_initramfs(root: Path, out: Path) -> None:
    """``find . | busybox cpio -o -H newc | gzip -1`` as a pipeline of argument lists."""
    with out.open("wb") as sink:
        find = subprocess.Popen(["find", "."], cwd=root, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(
            ["busybox", "cpio", "-o", "-H", "newc"],
            cwd=root,
            stdin=find.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert find.stdout is not None
        find.stdout.close()
        gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=sink)
        assert cpio.stdout is not None
        cpio.stdout.close()
        codes = (gz.wait(), cpio.wait(), find.wait())
    if any(codes):
        raise RuntimeError(f"packing the initramfs failed (gzip, cpio, find exit codes {codes})")
    with gzip.open(out, "rb") as check:  # a truncated archive would fail to boot obscurely
        while check.read(1 << 20):
            pass


def _clean_stale_builds(cache_dir: Path, max_age: float = 3600.0) -> None:
    now = time.time()
    for stale in cache_dir.glob(".build-*"):
        try:
            if now - stale.stat().st_mtime > max_age:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def ensure_guest_image(cache_dir: Path) -> GuestImage:
    """Build (once; cached in cache_dir) a Debian kernel + busybox initramfs for tiny guests.

    The build happens in a temporary directory inside cache_dir that is renamed into place
    when complete, so an interrupted or concurrent build never leaves a half-built image.
    """
    cache_dir = Path(cache_dir).resolve()
    final = cache_dir / f"guest-{_image_key()}"
    image = GuestImage(kernel=final / "vmlinuz", initrd=final / "initrd.gz")
    if image.kernel.is_file() and image.initrd.is_file():
        return image
    cache_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale_builds(cache_dir)
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        work = build / "work"
        work.mkdir()
        out = build / "image"
        out.mkdir()
        vmlinuz, moddir = _fetch_kernel(work)
        rootfs = work / "rootfs"
        _build_rootfs(rootfs, moddir)
        _pack_initramfs(rootfs, out / "initrd.gz")
        shutil.copy2(vmlinuz, out / "vmlinuz")
        (out / "kernel-release").write_text(vmlinuz.name.removeprefix("vmlinuz-") + "\n")
        shutil.rmtree(work)
        for path in out.iterdir():
            path.chmod(0o644)
        out.chmod(0o755)
        try:
            os.rename(out, final)
        except OSError:
            # Somebody else finished first (the target exists and is not empty): use theirs.
            if not (image.kernel.is_file() and image.initrd.is_file()):
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return image


def guest_domain_xml(
    name: str,
    uuid: str,
    image: GuestImage,
    console_log: Path,
    memory_mib: int = 128,
    vcpus: int = 1,
) -> str:
    """libvirt XML for a tiny real guest: TCG, direct kernel boot, serial console to a log."""
    cmdline = f"console=ttyS0 pvc.name={guest_kernel_name(name)}"
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <uuid>{escape(uuid)}</uuid>
  <memory unit='MiB'>{int(memory_mib)}</memory>
  <currentMemory unit='MiB'>{int(memory_mib)}</currentMemory>
  <vcpu placement='static'>{int(vcpus)}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(image.kernel))}</kernel>
    <initrd>{escape(str(image.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
    <tcg>
      <tb-cache unit='MiB'>32</tb-cache>
    </tcg>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <serial type='pty'>
      <log file={quoteattr(str(console_log))} append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='virtio'>
      <stats period='2'/>
    </memballoon>
  </devices>
</domain>
"""
