"""A process and all its descendants: their memory, read from /proc (what a server's supervisor and its
workers, or a batch command and its workers, hold together; used by the memory and reload tests), and
how a test stops a server it started in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Summed VmRSS (bytes) of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class Sampler(threading.Thread):
    """(seconds since start, tree RSS) every ``interval`` s until ``halt`` is set; ``t0`` is the start
    (``time.monotonic()``), so ``t0 + seconds`` places a sample on the monotonic clock."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        self.t0 = time.monotonic()
        while not self.halt.is_set():
            self.samples.append((time.monotonic() - self.t0, tree_rss(self.pid)))
            self.halt.wait(self.interval)


class ProcessSampler:
    """:class:`Sampler` in a process of its own: a sampler thread in a test process busy with many client
    threads gets the GIL too rarely to see a short peak. ``samples`` holds (``time.monotonic()``, tree RSS)
    pairs (the monotonic clock is the system's: comparable across processes) once :meth:`stop` returns."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import subprocess
        import sys

        self.samples: list[tuple[float, int]] = []
        self._proc = subprocess.Popen([sys.executable, __file__, str(pid), str(interval)],
                                      stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)

    def stop(self) -> list[tuple[float, int]]:
        out, _ = self._proc.communicate("stop\n", timeout=30)
        self.samples = [(float(t), int(r)) for t, r in (line.split() for line in out.splitlines() if line.strip())]
        return self.samples


def _sample_until_stdin_closes(pid: int, interval: float) -> None:
    import sys

    sampler = Sampler(pid, interval)
    sampler.start()
    sys.stdin.readline()
    sampler.halt.set()
    sampler.join()
    for t, r in sampler.samples:
        print(f"{sampler.t0 + t:.4f} {r}")


if __name__ == "__main__":
    import sys

    _sample_until_stdin_closes(int(sys.argv[1]), float(sys.argv[2]))


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a process started with its own process group (``start_new_session=True``) and everything in
    that group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
