"""Stop a child process at a known point of its work, so a test kills or interrupts it there and nowhere else.

Why: a test that sleeps or polls until "enough" work is done and then kills the process measures the machine's load,
not the product (a busy machine lets the run finish first, or kills it before the point the test is about). Here the
child patches one product function (`patch`, Python code run before the command) so that, at the event the test
waits for, it calls `pause()`: that writes a marker file named after its pid into `folder` and waits until the file
is removed. The parent waits for the marker (`wait_paused`), acts (SIGKILL, SIGINT, ...), then `release`s the child.

    child = PausingChild(tmp_path / "pause", patch=PATCH, argv=["train", "--config", cfg])
    child.wait_paused()          # the child is stopped inside the patched function
    child.proc.send_signal(signal.SIGINT)
    child.release()              # it goes on from exactly there

`pause` is also usable in children that a launcher starts (torchrun): `script` writes the child program as a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PausingChild", "child_program"]

REPO = Path(__file__).resolve().parents[1]

_PRELUDE = '''
import os, sys, time
import torch
torch.set_num_threads(1)
PAUSE_DIR = {folder!r}


def pause():
    """Stop here until the test removes this process's marker file."""
    marker = os.path.join(PAUSE_DIR, str(os.getpid()))
    with open(marker + ".tmp", "w") as fh:
        fh.write("paused")
    os.replace(marker + ".tmp", marker)  # appears complete
    while os.path.exists(marker):
        time.sleep(0.01)  # waits for the test's release, whatever the machine's load; a signal may land here

'''

_MAIN = '''
from istpan.cli.main import main
sys.exit(main(sys.argv[1:]))
'''


def child_program(folder: Path, patch: str) -> str:
    """Python source of a child: `pause()`, then `patch` (which installs the calls to it), then `istpan <argv>`."""
    return _PRELUDE.format(folder=str(folder)) + patch + _MAIN


class PausingChild:
    """`istpan <argv>` in a child process with `patch` applied (see the module docstring)."""

    def __init__(self, folder: Path, *, patch: str, argv: Sequence[str], **popen) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        self.proc = subprocess.Popen([sys.executable, "-c", child_program(self.folder, patch), *argv], env=env,
                                     **popen)

    def markers(self) -> list[Path]:
        return [p for p in self.folder.iterdir() if not p.name.endswith(".tmp")]

    def wait_paused(self, count: int = 1, timeout: float = 300) -> None:
        """Until `count` processes are paused. Fails (never skips) if the child ends or the time runs out first:
        either means the product never reached the event."""
        wait_for_markers(self.folder, count, [self.proc], timeout)

    def release(self) -> None:
        release(self.folder)


def wait_for_markers(folder: Path, count: int, procs: Sequence[subprocess.Popen], timeout: float = 300) -> None:
    """Poll `folder` for `count` pause markers (the deadline only turns a product that never pauses into a failure)."""
    deadline = time.monotonic() + timeout
    while len([p for p in Path(folder).iterdir() if not p.name.endswith(".tmp")]) < count:
        ended = [p.returncode for p in procs if p.poll() is not None]
        assert not ended, f"the child ended (status {ended}) before reaching the pause point"
        assert time.monotonic() < deadline, f"no pause within {timeout} s"
        time.sleep(0.01)


def release(folder: Path) -> None:
    """Let every paused process go on."""
    for p in Path(folder).iterdir():
        p.unlink(missing_ok=True)
