"""One run per run folder: a lock file naming its holder, which a crashed run does not leave stuck.

``RunLock(folder).acquire()`` creates ``folder/.lock`` exclusively, holding the pid, host and command of
the run.  A second run into the same folder is refused with a message naming the holder.  A lock whose
process is gone (a killed run on this host) is taken over with a note.  A lock held on another host
cannot be checked from here: the message says how to remove it once that run is known to be over.

A folder the lock created is removed again on release when nothing was written into it (a run that
failed its checks leaves no empty folder).  A process may take the lock of a folder it already holds (``distill`` locks the folder before building
its teacher cache, then the training loop locks it again); the file goes when the outermost holder
releases it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from distilled_shufflenet.io import remove_stale_temporaries

LOCK = ".lock"
# lock files this process holds -> how many times it took each (nested holders)
_HELD: dict[Path, int] = {}


class RunFolderBusy(ValueError):
    """Another live run holds the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder (see the module docstring).  Usable as a context manager."""

    def __init__(self, folder: str | os.PathLike, *, command: str = "dsn", field: str = "output") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.command = command
        self.field = field
        self.held = False
        self._created = False  # the folder did not exist before: released empty, it goes again

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written by a process killed while creating it

    def acquire(self) -> "RunLock":
        key = self.path.absolute()
        if _HELD.get(key):  # this process holds it already: a nested holder
            _HELD[key] += 1
            self.held = True
            return self
        try:
            self._created = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{self.field}: cannot create the run folder {self.folder}: {e.strerror}") from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released between our two looks
                self._take_over_or_refuse(holder, me["host"])
                continue
            except OSError as e:
                raise ValueError(f"{self.field}: cannot write to the run folder {self.folder}: {e.strerror}") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            _HELD[key] = 1
            remove_stale_temporaries(self.folder)
            return self
        raise RunFolderBusy(f"{self.field}: could not lock the run folder {self.folder}; another run keeps taking it")

    def _take_over_or_refuse(self, holder: dict[str, Any], host: str) -> None:
        pid, where = holder.get("pid"), holder.get("host")
        what = f"{holder.get('command', 'a run')} (pid {pid} on {where}, since {holder.get('started', '?')})"
        if isinstance(pid, int) and where == host and (pid == os.getpid() or not _alive(pid)) or not holder:
            print(f"note: {self.folder} was locked by {what}, which is no longer running; taking it over",
                  file=sys.stderr)
            self.path.unlink(missing_ok=True)
            return
        hint = (f"if that run is over (it ran on another host), delete {self.path}" if where != host
                else "wait for it to finish")
        raise RunFolderBusy(f"{self.field}: the run folder {self.folder} is in use by {what}; {hint}, "
                            "or choose another folder")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        key = self.path.absolute()
        _HELD[key] = _HELD.get(key, 1) - 1
        if _HELD[key] > 0:  # an outer holder keeps it
            return
        del _HELD[key]
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        if self._created:  # a run that failed before writing anything leaves no empty folder behind
            try:
                self.folder.rmdir()
            except OSError:  # not empty (the run wrote something), or already gone
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
