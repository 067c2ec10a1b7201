"""Which filesystem a store lives on: SQLite's WAL mode (the index) is unsafe on network filesystems.

SQLite keeps a WAL database's index in shared memory and relies on POSIX locks, neither of which a
network filesystem provides across hosts (https://www.sqlite.org/wal.html, "Disadvantages").
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["NETWORK_FILESYSTEMS", "filesystem_type"]

# Types as /proc/self/mountinfo names them.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
    "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.goofys", "fuse.juicefs", "fuse.rclone", "fuse.mountpoint-s3",
})


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding `path` (its longest mount point prefix), or None where
    /proc/self/mountinfo cannot be read (not Linux)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        fields = line.split()
        try:
            mount_point = fields[4].replace("\\040", " ")
            fs_type = fields[fields.index("-") + 1]
        except (IndexError, ValueError):
            continue
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best_type
