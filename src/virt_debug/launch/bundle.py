"""A portable debugger bundle for containers that have nothing: no shell, no libc.

The virt-launcher compute container is distroless, so the debugger is shipped with
every shared library it needs and the dynamic loader, and run through that loader::

    TOOLS/lib/ld-linux-x86-64.so.2 --inhibit-cache --library-path TOOLS/lib \\
        TOOLS/bin/strace ...

Nothing is read from the container and no LD_LIBRARY_PATH is set, so when strace
executes QEMU the kernel starts QEMU with QEMU's own loader and libraries: the
bundle's loader applies to strace alone. A static busybox is the wrapper's shell.

Layout: ``bin/<debugger>``, ``bin/busybox``, ``bin/sh -> busybox``, ``lib/`` (the
loader and the libraries, named as the binary asks for them), ``VERSION``
(key=value lines), ``MANIFEST`` (one line a file: sha256, size, mode, path, source,
package) and ``SHA256SUMS`` (checkable in the pod with ``bin/busybox sha256sum -c``).
"""

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from virt_debug import __version__
from virt_debug.errors import UsageError
from virt_debug.launch.elf import read_elf

log = logging.getLogger(__name__)

# debugger -> (program, Debian package, flag that prints its version)
DEBUGGERS = {
    "strace": ("strace", "strace", "-V"),
    "gdbserver": ("gdbserver", "gdbserver", "--version"),
}
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
# The loader's file name on each architecture, as the wrapper finds it in lib/.
LOADER_NAMES = {
    "x86_64": "ld-linux-x86-64.so.2",
    "aarch64": "ld-linux-aarch64.so.1",
    "i386": "ld-linux.so.2",
    "riscv64": "ld-linux-riscv64-lp64d.so.1",
}
# One line of `ld.so --list`: "\tname => /path (0x...)", "\t/path/ld.so (0x...)".
_LIST_LINE = re.compile(r"^\s*(\S+)(?: => (\S+|not found))?(?: \(0x[0-9a-f]+\))?\s*$")


@dataclass(frozen=True)
class BundleFile:
    path: str  # inside the bundle
    source: str  # on this machine
    size: int
    sha256: str
    mode: int
    package: str


def build_bundle(
    dest: Path, debugger: str = "strace", *, busybox: Path | None = None
) -> Path:
    """Build the bundle for ``debugger`` into ``dest`` (replaced whole); return it."""
    if debugger not in DEBUGGERS:
        names = ", ".join(sorted(DEBUGGERS))
        raise UsageError(f"no portable bundle for {debugger!r}; choose one of {names}")
    dest = Path(dest)
    program, package, _ = DEBUGGERS[debugger]
    binary = _find_program(program, package=package)
    shell = busybox or _find_busybox()

    # Build beside the destination and swap it in, so a failure leaves no half bundle.
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        files = _fill(staging, binary, shell, debugger)
        _write_metadata(staging, files, debugger, binary)
        reported = _check_self_contained(staging, debugger)
        with (staging / "VERSION").open("a") as version:
            version.write(f"debugger-version={reported}\n")
        _replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("built the %s bundle in %s (%d files)", debugger, dest, len(files))
    return dest


def bundle_archive(
    bundle: Path, *, extra: Mapping[str, tuple[bytes, int]] | None = None
) -> Iterator[bytes]:
    """Stream the bundle as tar.gz chunks; ``extra`` adds files: name -> (data, mode).

    The archive is what ``transfer.upload_command`` unpacks in the helper pod; the
    wrapper script usually travels as an extra file.
    """
    from virt_debug.launch.transfer import pack_directory

    return pack_directory(bundle, extra=extra)


def loader_name(machine: str) -> str:
    """The loader's file name in ``lib/`` for an architecture (``uname -m`` naming)."""
    try:
        return LOADER_NAMES[machine]
    except KeyError as e:
        raise UsageError(f"no portable bundle for the {machine} architecture") from e


def debugger_argv(
    tool_dir: str, debugger: str = "strace", machine: str = ""
) -> list[str]:
    """The command that runs the bundled debugger through the bundle's own loader."""
    machine = machine or os.uname().machine
    lib = f"{tool_dir}/lib"
    # --inhibit-cache: never consult the container's /etc/ld.so.cache.
    return [
        f"{lib}/{loader_name(machine)}",
        "--inhibit-cache",
        "--library-path",
        lib,
        f"{tool_dir}/bin/{debugger}",
    ]


def read_version(bundle: Path) -> dict[str, str]:
    """The VERSION file of a bundle as a dict."""
    text = (Path(bundle) / "VERSION").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _find_program(name: str, *, package: str) -> Path:
    found = shutil.which(name)
    if not found:
        raise UsageError(
            f"{name} is not installed on this machine; the bundle is built from it",
            hint=f"install it, for example: apt-get install -y {package}",
        )
    return Path(found).resolve()


def _find_busybox() -> Path:
    for candidate in BUSYBOX_PATHS:
        path = Path(candidate)
        if path.exists() and read_elf(path).static:
            return path
    raise UsageError(
        "no static busybox on this machine; the bundle needs it as the pod's shell",
        hint="install it, for example: apt-get install -y busybox-static",
    )


def _fill(root: Path, binary: Path, shell: Path, debugger: str) -> list[BundleFile]:
    info = read_elf(binary)
    if info.interpreter is None:
        raise UsageError(f"{binary} is static; copy it as it is instead of bundling it")
    busybox = read_elf(shell)
    if not busybox.static:
        raise UsageError(f"{shell} is not statically linked; install busybox-static")
    if busybox.machine != info.machine:
        raise UsageError(f"{shell} is {busybox.machine} but {binary} is {info.machine}")

    (root / "bin").mkdir()
    (root / "lib").mkdir()
    copies = {f"bin/{debugger}": binary, "bin/busybox": shell}
    loader = Path(info.interpreter)
    copies[f"lib/{loader_name(info.machine)}"] = loader
    for soname, source in _library_closure(binary, loader).items():
        copies[f"lib/{soname}"] = source

    files = [_copy(root, inside, source) for inside, source in copies.items()]
    # busybox picks the applet from argv[0]: the wrapper's shebang names bin/sh.
    (root / "bin" / "sh").symlink_to("busybox")
    return _with_packages(files)


def _library_closure(binary: Path, loader: Path) -> dict[str, Path]:
    """Every library the loader maps for ``binary``: DT_NEEDED, recursively, RUNPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    result = subprocess.run(
        [str(loader), "--list", str(binary)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise UsageError(
            f"the loader cannot list the libraries of {binary}: {result.stderr}"
        )

    libraries: dict[str, Path] = {}
    for line in result.stdout.splitlines():
        match = _LIST_LINE.match(line)
        if not match or not match.group(2):
            continue  # the vDSO and the loader itself
        soname, where = match.groups()
        if where == "not found":
            raise UsageError(f"{binary} needs {soname}, which this machine lacks")
        libraries[soname] = Path(where)
    return libraries


def _copy(root: Path, inside: str, source: Path) -> BundleFile:
    target = root / inside
    # Copy the content behind symlinks: the bundle holds plain files only.
    shutil.copyfile(source, target)
    mode = 0o755 if inside.startswith("bin/") or "/ld-" in inside else 0o644
    target.chmod(mode)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    return BundleFile(inside, str(source), target.stat().st_size, digest, mode, "")


def _with_packages(files: list[BundleFile]) -> list[BundleFile]:
    """Name the Debian package and version each file came from, where dpkg knows."""
    packages = _dpkg_owners([f.source for f in files])
    versions = _dpkg_versions(sorted(set(packages.values())))
    named = []
    for f in files:
        package = packages.get(f.source, "")
        label = f"{package}={versions[package]}" if package in versions else "-"
        named.append(BundleFile(f.path, f.source, f.size, f.sha256, f.mode, label))
    return named


def _dpkg_owners(paths: list[str]) -> dict[str, str]:
    # dpkg knows a file under the path its package shipped, which may be the
    # unresolved one (/lib64/...) or the resolved one; ask for both.
    asked = {}
    for path in paths:
        asked[path] = path
        asked.setdefault(os.path.realpath(path), path)
        # Merged /usr: the package may name /bin/x where the file is /usr/bin/x.
        other = path.removeprefix("/usr") if path.startswith("/usr/") else "/usr" + path
        asked.setdefault(other, path)
    try:
        result = subprocess.run(
            ["dpkg-query", "-S", *asked], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return {}
    owners = {}
    for line in result.stdout.splitlines():
        package, sep, path = line.partition(": ")
        if sep and path in asked and "," not in package:
            owners[asked[path]] = package
    return owners


def _dpkg_versions(packages: list[str]) -> dict[str, str]:
    if not packages:
        return {}
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}:${Architecture} ${Version}\n", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    versions = {}
    for line in result.stdout.splitlines():
        name, _, version = line.partition(" ")
        versions[name] = version
        versions.setdefault(name.split(":")[0], version)
    return versions


def _write_metadata(
    root: Path, files: list[BundleFile], debugger: str, binary: Path
) -> None:
    machine = read_elf(binary).machine
    by_path = {f.path: f for f in files}
    version = {
        "virt-debug": __version__,
        "debugger": debugger,
        "debugger-package": by_path[f"bin/{debugger}"].package,
        "machine": machine,
        "loader": f"lib/{loader_name(machine)}",
        "shell": "bin/sh",
    }
    (root / "VERSION").write_text("".join(f"{k}={v}\n" for k, v in version.items()))

    lines = ["# sha256 size mode path source package=version"]
    for f in sorted(files, key=lambda f: f.path):
        lines.append(
            f"{f.sha256} {f.size} {f.mode:04o} {f.path} {f.source} {f.package}"
        )
    lines.append("# bin/sh is a symlink to busybox")
    (root / "MANIFEST").write_text("\n".join(lines) + "\n")
    sums = "".join(
        f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path)
    )
    (root / "SHA256SUMS").write_text(sums)
    for name in ("VERSION", "MANIFEST", "SHA256SUMS"):
        (root / name).chmod(0o644)


def _check_self_contained(root: Path, debugger: str) -> str:
    """Resolve again with the bundled loader, no cache, no environment; run it.

    Returns the first line the debugger prints about its version.
    """
    argv = debugger_argv(str(root), debugger, read_version(root)["machine"])
    listing = subprocess.run(
        [*argv[:4], "--list", argv[4]], capture_output=True, text=True, env={}
    )
    outside = [
        m.group(2)
        for m in map(_LIST_LINE.match, listing.stdout.splitlines())
        if m and m.group(2) and not m.group(2).startswith(str(root))
    ]
    if listing.returncode != 0 or outside:
        raise UsageError(
            f"the {debugger} bundle is not self-contained: {outside or listing.stderr}"
        )

    run = subprocess.run(
        [*argv, DEBUGGERS[debugger][2]], capture_output=True, text=True, env={}
    )
    if run.returncode != 0:
        raise UsageError(f"the bundled {debugger} does not run: {run.stderr.strip()}")
    return (run.stdout.splitlines() or [""])[0].strip()


def _replace(staging: Path, dest: Path) -> None:
    staging.chmod(0o755)
    if not dest.exists() and not dest.is_symlink():
        staging.rename(dest)
        return

    # Replace only what is clearly ours to replace: an empty directory or a bundle.
    reusable = dest.is_dir() and not dest.is_symlink()
    if reusable and any(dest.iterdir()) and not (dest / "VERSION").is_file():
        reusable = False
    if not reusable:
        raise UsageError(f"{dest} exists and is not a bundle; choose a new directory")
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
