"""The cores a process may use (``scorer._cpu``): its CPU affinity capped by its cgroup CPU quota.

Each case writes the files the kernel shows (``/proc/self/cgroup``, ``/proc/self/mountinfo`` and the
cgroup files under the mount points) into a temporary root, as a container, a Kubernetes pod or a
hybrid host shows them, and reads them with the same code that reads ``/``. The real thing, under
``docker run --cpus``, is tests/container/test_cpu_quota.py.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from scorer._cpu import cores, cpu_quota

pytestmark = pytest.mark.fast

AFFINITY = len(os.sched_getaffinity(0))

# mountinfo lines: id parent major:minor root mount-point options - type source super-options
V2_MOUNT = "30 23 0:26 {root} {point} rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNT = "32 31 0:29 {root} {point} rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,{controllers}\n"
OTHER_MOUNTS = ("22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
                "25 22 0:5 / /proc rw,nosuid - proc proc rw\n")


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(root: Path, membership: str, limits: dict[str, str], *, mount_root: str = "/",
            point: str = "/sys/fs/cgroup") -> Path:
    """A cgroup v2 host: the process in cgroup ``membership``; ``limits``: cgroup -> cpu.max."""
    write(root, "proc/self/cgroup", f"0::{membership}\n")
    write(root, "proc/self/mountinfo", OTHER_MOUNTS + V2_MOUNT.format(root=mount_root, point=point))
    (root / point.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for cgroup, value in limits.items():
        write(root, f"{point.lstrip('/')}/{cgroup.strip('/')}/cpu.max".replace("//", "/"), value + "\n")
    return root


def v1_limits(root: Path, point: str, limits: dict[str, tuple[int, int]]) -> None:
    for cgroup, (quota, period) in limits.items():
        folder = f"{point.lstrip('/')}/{cgroup.strip('/')}".rstrip("/")
        write(root, f"{folder}/cpu.cfs_quota_us", f"{quota}\n")
        write(root, f"{folder}/cpu.cfs_period_us", f"{period}\n")


def expected_cores(quota: float | None) -> int:
    return AFFINITY if quota is None else max(1, min(AFFINITY, math.ceil(quota)))


def test_v2_container_with_its_own_cgroup_namespace(tmp_path: Path) -> None:
    """``docker run --cpus 1.5`` on a cgroup v2 host: the container sees its cgroup as ``/``; 1.5 cores,
    rounded up to 2 (if the process may run on 2 CPUs)."""
    root = v2_tree(tmp_path, "/", {"/": "150000 100000"})
    assert cpu_quota(root) == 1.5
    assert cores(root) == expected_cores(1.5)


def test_v2_max_is_no_limit(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "/", {"/": "max 100000"})
    assert cpu_quota(root) is None
    assert cores(root) == AFFINITY


def test_v2_quota_of_a_parent_counts(tmp_path: Path) -> None:
    """A Kubernetes pod's limit sits on the pod's cgroup, above the container's (which may say max): the
    lowest limit on the way up to the mount is the one that holds."""
    pod = "/kubepods.slice/kubepods-pod1.slice"
    root = v2_tree(tmp_path, f"{pod}/cri-containerd-abc.scope",
                   {"/": "max 100000", pod: "50000 100000", f"{pod}/cri-containerd-abc.scope": "max 100000"})
    assert cpu_quota(root) == 0.5
    assert cores(root) == 1


def test_v2_cgroup_seen_at_the_mount_root(tmp_path: Path) -> None:
    """No cgroup namespace: /proc/self/cgroup names the full path, and the mount shows that cgroup at its
    mount point (mountinfo's root field): the limit is read at the mount point, not at a path below it."""
    scope = "/system.slice/docker-abc.scope"
    # the decoy: a cgroup that looks like the full path below the mount point, with another limit
    root = v2_tree(tmp_path, scope, {"/": "200000 100000", scope: "50000 100000"}, mount_root=scope)
    assert cpu_quota(root) == 2.0


def test_v1_docker_container(tmp_path: Path) -> None:
    """``docker run --cpus 1`` on a cgroup v1 host (this machine's kind): the cpu controller's mount shows
    the container's cgroup /docker/<id> at /sys/fs/cgroup/cpu,cpuacct."""
    point = "/sys/fs/cgroup/cpu,cpuacct"
    write(tmp_path, "proc/self/cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    write(tmp_path, "proc/self/mountinfo",
          OTHER_MOUNTS + "31 22 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n"
          + V1_MOUNT.format(root="/docker/abc", point=point, controllers="cpu,cpuacct")
          + V1_MOUNT.format(root="/docker/abc", point="/sys/fs/cgroup/memory", controllers="memory"))
    v1_limits(tmp_path, point, {"/": (100000, 100000)})
    assert cpu_quota(tmp_path) == 1.0
    assert cores(tmp_path) == 1


def test_v1_minus_one_is_no_limit_and_a_parent_limit_counts(tmp_path: Path) -> None:
    """A host view (mount root /): the process's cgroup says -1, its parent 3 cores (250 ms per 100 ms
    would be 2.5: rounded up)."""
    point = "/sys/fs/cgroup/cpu"
    write(tmp_path, "proc/self/cgroup", "3:cpu:/batch/job7\n2:cpuacct:/batch/job7\n")
    write(tmp_path, "proc/self/mountinfo", OTHER_MOUNTS + V1_MOUNT.format(root="/", point=point, controllers="cpu"))
    v1_limits(tmp_path, point, {"/": (-1, 100000), "/batch/job7": (-1, 100000)})
    assert cpu_quota(tmp_path) is None
    v1_limits(tmp_path, point, {"/batch": (250000, 100000)})
    assert cpu_quota(tmp_path) == 2.5
    assert cores(tmp_path) == expected_cores(2.5)


def test_hybrid_host_takes_the_lowest_limit(tmp_path: Path) -> None:
    """Both hierarchies mounted (v1 controllers and a v2 ``unified`` mount): either may hold the limit."""
    point = "/sys/fs/cgroup/cpu"
    write(tmp_path, "proc/self/cgroup", "1:cpu:/\n0::/\n")
    write(tmp_path, "proc/self/mountinfo", OTHER_MOUNTS + V1_MOUNT.format(root="/", point=point, controllers="cpu")
          + V2_MOUNT.format(root="/", point="/sys/fs/cgroup/unified"))
    v1_limits(tmp_path, point, {"/": (-1, 100000)})
    (tmp_path / "sys/fs/cgroup/unified").mkdir(parents=True)
    assert cpu_quota(tmp_path) is None  # neither limits (the v2 root has no cpu.max at all)
    v1_limits(tmp_path, point, {"/": (300000, 100000)})
    write(tmp_path, "sys/fs/cgroup/unified/cpu.max", "100000 100000\n")
    assert cpu_quota(tmp_path) == 1.0


def test_escaped_mount_point(tmp_path: Path) -> None:
    """mountinfo writes a space in a path as \\040."""
    write(tmp_path, "proc/self/cgroup", "0::/\n")
    write(tmp_path, "proc/self/mountinfo", OTHER_MOUNTS + V2_MOUNT.format(root="/", point=r"/cg\040root"))
    write(tmp_path, "cg root/cpu.max", "100000 100000\n")
    assert cpu_quota(tmp_path) == 1.0


@pytest.mark.parametrize("files", [{}, {"proc/self/cgroup": "0::/\n"},
                                   {"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": OTHER_MOUNTS}])
def test_nothing_to_read_is_no_limit(tmp_path: Path, files: dict[str, str]) -> None:
    """No /proc (not Linux), no cgroup mount: the affinity alone."""
    for rel, text in files.items():
        write(tmp_path, rel, text)
    assert cpu_quota(tmp_path) is None
    assert cores(tmp_path) == AFFINITY


def test_a_quota_above_the_affinity_leaves_the_affinity(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "/", {"/": f"{(AFFINITY + 3) * 100000} 100000"})
    assert cpu_quota(root) == AFFINITY + 3
    assert cores(root) == AFFINITY
