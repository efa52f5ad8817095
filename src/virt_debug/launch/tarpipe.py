"""Tar over a pipe, for both ends of an exec stream. Python 3.9 standard library only.

The helper pod runs this very source as ``python3 -c SOURCE unpack DEST`` (an archive
on stdin, unpacked into DEST) or ``python3 -c SOURCE pack SRC [--since NAME]`` (SRC
as tar.gz on stdout). The sidecar-shim image has python3.9 but maybe no tar, and
tarfile's own extraction filters are missing from older 3.9 releases, so the rules
are ours and the same on the pod and on the user's machine:

- members are regular files, directories, or symlinks with a relative target that
  has no ``..``; absolute names, ``..`` components, hard links and device nodes are
  refused, and nothing is ever written through a symlink;
- set-id bits are dropped, permission bits kept (executables stay executable);
- the unpacked size and the number of members are capped;
- everything lands in a staging directory first: a refused archive changes nothing,
  an accepted one replaces the top-level entries it carries.

The last line on stderr is the summary: ``virt-debug-transfer: ok files=N bytes=B``.
"""

import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import zlib

MAX_BYTES = 4 << 30
MAX_FILES = 100000
MARKER = ".virt-debug-transfer"
LAUNCH = re.compile(r"^(\d{8})-(\d{6})-(\d+)(?:-(\d+))?$")
CHUNK = 1 << 16


class Refused(Exception):
    pass


MAX_HEADER = 1 << 20


def capped(header):
    # tarfile reads a pax or GNU long-name header whole into memory.
    if header.size > MAX_HEADER:
        raise Refused(f"an extended header of {header.size} bytes")


class Header(tarfile.TarInfo):
    def _proc_pax(self, archive):
        capped(self)
        return super()._proc_pax(archive)

    def _proc_gnulong(self, archive):
        capped(self)
        return super()._proc_gnulong(archive)


class ChunkReader:
    """A read()-able view of an iterator of byte chunks, whatever their sizes."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.current = b""
        self.at = 0

    def read(self, size=-1):
        parts = []
        while size != 0:
            if self.at >= len(self.current):
                self.current, self.at = next(self.chunks, None), 0
                if self.current is None:
                    self.current = b""
                    break
                continue
            end = (
                len(self.current)
                if size < 0
                else min(len(self.current), self.at + size)
            )
            parts.append(self.current[self.at : end])
            size = size if size < 0 else size - (end - self.at)
            self.at = end
        return b"".join(parts)


def safe_parts(name):
    if name.startswith("/") or "\0" in name:
        raise Refused(f"{name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(f"{name!r}: '..' in path")
    return parts


def safe_link(name, target):
    if not target or target.startswith("/") or ".." in target.split("/"):
        raise Refused(f"{name!r}: symlink to {target!r} leaves the destination")


def parents(root, parts, name):
    # Every parent must be a real directory we made: never write through a link.
    path = root
    for part in parts[:-1]:
        path = os.path.join(path, part)
        if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
            raise Refused(f"{name!r}: a parent is not a directory")
        if not os.path.exists(path):
            os.mkdir(path, 0o755)
    return os.path.join(path, parts[-1])


def fresh(root, parts, name):
    path = parents(root, parts, name)
    if os.path.isdir(path) and not os.path.islink(path):
        raise Refused(f"{name!r}: would replace a directory")
    if os.path.lexists(path):
        os.unlink(path)
    return path


def unpack_into(fileobj, root, max_bytes, max_files):
    files = total = 0
    try:
        archive = tarfile.open(fileobj=fileobj, mode="r|*", tarinfo=Header)
    except tarfile.ReadError as e:
        raise Refused(f"not a tar archive ({e})") from e
    for member in archive:
        parts = safe_parts(member.name)
        if not parts:
            continue
        files += 1
        if files > max_files:
            raise Refused(f"more than {max_files} members")
        mode = member.mode & 0o777
        if member.isdir():
            path = parents(root, parts, member.name)
            if (
                os.path.islink(path)
                or os.path.lexists(path)
                and not os.path.isdir(path)
            ):
                raise Refused(f"{member.name!r}: directory over a file or link")
            if not os.path.exists(path):
                os.mkdir(path)
            os.chmod(path, mode | 0o700)
        elif member.issym():
            safe_link(member.name, member.linkname)
            os.symlink(member.linkname, fresh(root, parts, member.name))
        elif member.isreg():
            if member.size > max_bytes - total:
                raise Refused(
                    f"{member.name!r}: {member.size} bytes is over the limit"
                    f" of {max_bytes}"
                )
            path = fresh(root, parts, member.name)
            total += copy_member(archive, member, path, mode)
        else:
            raise Refused(f"{member.name!r}: not a file, directory or symlink")
    return files, total


def copy_member(archive, member, path, mode):
    source = archive.extractfile(member)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    written = 0
    with os.fdopen(fd, "wb") as target:
        while True:
            data = source.read(CHUNK)
            if not data:
                break
            target.write(data)
            written += len(data)
        os.fchmod(target.fileno(), mode)
    os.utime(path, (member.mtime, member.mtime))
    return written


def unpack(
    fileobj, dest, max_bytes=MAX_BYTES, max_files=MAX_FILES, marker=True, replace=True
):
    created = not os.path.isdir(dest)
    os.makedirs(dest, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".incoming-", dir=dest)
    done = False
    try:
        try:
            files, total = unpack_into(fileobj, stage, max_bytes, max_files)
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise Refused(f"archive truncated or corrupt ({e})") from e
        entries = sorted(os.listdir(stage))
        taken = [e for e in entries if os.path.lexists(os.path.join(dest, e))]
        if taken and not replace:
            # The user's own directory: an archive from the pod must not be able
            # to replace what is there (a .ssh, a source tree).
            raise Refused(f"{taken[0]!r} is already in {dest}; fetch into a new one")
        for entry in entries:
            replace_entry(os.path.join(stage, entry), os.path.join(dest, entry))
        if marker:
            with open(os.path.join(dest, MARKER), "w") as done_file:
                done_file.write(
                    f"files={files} bytes={total} time={int(time.time())}\n"
                )
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not done:
            shutil.rmtree(dest, ignore_errors=True)
    return files, total


def replace_entry(new, old):
    if os.path.isdir(old) and not os.path.islink(old):
        aside = f"{old}.replaced-{os.getpid()}"
        os.rename(old, aside)
        os.rename(new, old)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(new, old)


def launch_key(name):
    match = LAUNCH.match(name)
    return match and tuple(int(g or 0) for g in match.groups())


def walk(src, since):
    newer = launch_key(since) if since else None
    for entry in sorted(os.listdir(src)):
        key = launch_key(entry)
        if since and key and (key <= newer if newer else entry <= since):
            continue
        if entry.startswith(".incoming-"):
            continue
        yield from walk_entry(src, entry)


def walk_entry(src, name):
    path = os.path.join(src, name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return  # removed while we walked: nothing to send
    yield name, path, info
    if stat.S_ISDIR(info.st_mode):
        for entry in sorted(os.listdir(path)):
            yield from walk_entry(src, name + "/" + entry)


def header(name, info, kind, size=0, linkname=""):
    member = tarfile.TarInfo(name)
    member.type, member.size, member.linkname = kind, size, linkname
    member.mode, member.mtime = info.st_mode & 0o777, int(info.st_mtime)
    return member.tobuf(tarfile.PAX_FORMAT)


def iter_pack(src, since=None, extra=None, notes=None):
    """Yield SRC (and extra {name: (bytes, mode)}) as tar.gz chunks."""
    gzip = zlib.compressobj(6, zlib.DEFLATED, 31)
    notes = notes if notes is not None else []
    counts = [0, 0]
    for name, path, info in walk(src, since):
        if stat.S_ISDIR(info.st_mode):
            yield gzip.compress(header(name, info, tarfile.DIRTYPE))
        elif stat.S_ISLNK(info.st_mode):
            target = os.readlink(path)
            try:
                safe_link(name, target)
            except Refused as e:
                notes.append(f"skipped {e}")
                continue
            yield gzip.compress(header(name, info, tarfile.SYMTYPE, linkname=target))
        elif stat.S_ISREG(info.st_mode):
            try:
                source = open(path, "rb")
            except FileNotFoundError:
                continue
            with source:
                for block in file_blocks(name, source, info, notes):
                    yield gzip.compress(block)
            counts[1] += info.st_size
        else:
            notes.append(f"skipped {name!r}: not a file, directory or symlink")
            continue
        counts[0] += 1
    for name, (data, mode) in sorted((extra or {}).items()):
        safe_parts(name)
        info = os.stat_result((mode, 0, 0, 1, 0, 0, len(data), 0, time.time(), 0))
        yield gzip.compress(header(name, info, tarfile.REGTYPE, len(data)))
        yield gzip.compress(data + b"\0" * (-len(data) % 512))
        counts[0] += 1
        counts[1] += len(data)
    yield gzip.compress(b"\0" * 1024)
    yield gzip.flush()
    notes.append(f"ok files={counts[0]} bytes={counts[1]}")


def file_blocks(name, source, info, notes):
    # A trace may still grow while it is packed: send the size seen at stat time.
    yield header(name, info, tarfile.REGTYPE, info.st_size)
    left = info.st_size
    while left:
        data = source.read(min(CHUNK, left))
        if not data:
            notes.append(f"{name!r} shrank while packed; zero-filled")
            data = b"\0" * min(CHUNK, left)
        left -= len(data)
        yield data
    yield b"\0" * (-info.st_size % 512)


def unpack_main(argv):
    # unpack DEST [--max-bytes N]
    limit = int(argv[2]) if argv[1:2] == ["--max-bytes"] else MAX_BYTES
    try:
        files, total = unpack(sys.stdin.buffer, argv[0], limit)
    except (Refused, OSError) as e:
        sys.stderr.write(f"virt-debug-transfer: refused: {e}; nothing was changed\n")
        return 1
    sys.stderr.write(f"virt-debug-transfer: ok files={files} bytes={total}\n")
    return 0


def pack_main(argv):
    # pack SRC [--since NAME]
    since = argv[2] if argv[1:2] == ["--since"] else None
    if not os.path.isdir(argv[0]):
        sys.stderr.write(
            f"virt-debug-transfer: refused: {argv[0]} is not a directory\n"
        )
        return 1
    notes = []
    try:
        for chunk in iter_pack(argv[0], since, notes=notes):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    except OSError as e:
        sys.stderr.write(
            f"virt-debug-transfer: failed: {e}; the archive is cut short\n"
        )
        return 1
    sys.stderr.write("".join(f"virt-debug-transfer: {note}\n" for note in notes))
    return 0


ENTRIES = {"unpack": unpack_main, "pack": pack_main}

if __name__ == "__main__":
    sys.exit(ENTRIES[sys.argv[1]](sys.argv[2:]))
