"""Atomic file writes: every output of the project (files, figures) appears whole under its name, or not at all."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from io import BytesIO
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it is synced and renamed over
    ``path``. An error mid-write leaves the previous file intact and no temporary behind; a process that
    is killed outright leaves ``.NAME.PID.XXXX.tmp``, which :func:`remove_stale_temporaries` recognises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def save_figure(fig: Figure, png_path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Render a matplotlib ``Figure`` built without pyplot (no global state, no display) on an Agg canvas
    and write it as a PNG atomically, so a reader never sees half an image (runs redraw their figures
    while they train). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only where a figure is drawn

    FigureCanvasAgg(fig)
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(buf.getvalue(), png_path)


# `.NAME.PID.part`, `.NAME.PID.TOKEN.part` (video writers, copies) and `.NAME.PID.TOKEN.tmp` (atomic_write);
# the shortest NAME that fits, so that an all-digit TOKEN is not taken for the PID
_TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.(?P<pid>\d+)(?:\.[A-Za-z0-9_]+)?\.(?:part|tmp)$")


def _process_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:  # not a possible process id
        return False
    return True


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that a killed process of this project left in ``folder`` (and below it
    with ``recursive``): the hidden ``.NAME.PID[.TOKEN].part`` / ``.tmp`` files of the atomic writers
    whose process PID no longer runs on this machine. Those of running processes are kept, so commands
    writing into one folder at the same time never delete each other's work. Returns the deleted paths;
    a folder that does not exist has none."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.rglob(".*") if recursive else folder.glob(".*"):
        m = _TEMPORARY.match(path.name)
        if m is None or not path.is_file() or _process_running(int(m["pid"])):
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # removed meanwhile
            continue
        removed.append(path)
    return removed


def check_writable_folder(folder: str | os.PathLike, field: str) -> Path:
    """Create ``folder`` if needed and check that files can be written in it, before any long work
    whose results would go there. Raises ``ValueError`` naming ``field`` and the folder otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{field}: {folder} is a file; expected a folder to write into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".write-test.{os.getpid()}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or errno.errorcode.get(e.errno or 0, str(e))
        raise ValueError(f"{field}: cannot write into {folder} ({reason}); choose a folder you can write to") from None
    return folder
