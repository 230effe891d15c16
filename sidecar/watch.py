"""Watch mode (SPEC §8.3, `reload: {watch: true, interval: 2}`): reload by itself when files change.

What is watched: the configuration file and every file it names (certificates, keys, key password
files, CRLs, SSLAUTH files, NRPASSW files, the admin token file), recomputed from the running
configuration at every poll, so that a reload that names new files watches them from then on.

How. A poll every `min(interval / 2, 1)` seconds reads each file's state in a worker thread: the
path resolved through every symlink, `os.stat` through them (device, inode, size, mtime, ctime),
and a BLAKE2 digest of the content, computed again only when the resolved target or the stat
changed. A change is a different content or a file that appeared or disappeared; a `touch` or a
symlink swap to identical content is not one. When no file changed for `interval` seconds after
the last change, the runtime reloads (`Runtime.reload`: logged `reloaded` or `reload_refused`
with the errors, counted in `sidecar_reloads_total{result}`; a refused reload keeps the running
configuration, and the next change tries again).

Why polling and not inotify (or a library over it, such as watchfiles). Kubernetes publishes a
ConfigMap or Secret volume by writing a new timestamped directory and renaming a `..data` symlink
over the old one; the files the configuration names are symlinks through `..data`. Inotify on a
file follows the inode it was opened on, which the swap abandons, so one must watch directories
and re-resolve links, and inotify sees nothing on NFS or on some overlay and FUSE volumes. Reading
a dozen small files' states once a second in a thread does the same job on every filesystem, with
one code path, no dependency, and costs the data path nothing: nothing here runs per connection,
and the event loop only sleeps and compares two small dictionaries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import logs
from .config import Config, Reload

_READ_CHUNK = 1 << 20
# Read at most this much of a file for its digest (what the loader accepts, and one byte more):
# the size is in the stat signature, so a change beyond it is still seen.
_DIGEST_LIMIT = 16 * 1024 * 1024 + 1


def watched_files(config: Config, config_path: Path | None = None) -> tuple[Path, ...]:
    """The configuration file and every file it names, each once, in a stable order.

    `config_path` is the configuration file as the process was given it (what a reload reads):
    when it is a symlink (a ConfigMap's `..data` link, a `current -> v2` link) a swap changes what
    it resolves to even if the old target stays in place; every path's state is taken through its
    links at each poll (`config.source` is the same path made absolute, listed once).
    """
    paths: list[Path] = [config_path.absolute()] if config_path is not None else []
    paths.append(config.source)
    for entry in config.pki:
        paths.extend(p for p in (entry.cert, entry.key, entry.key_password_file) if p is not None)
    for profile in config.profiles:
        paths.extend(profile.crl)
    paths.extend(listener.sslauth for listener in config.listeners if listener.sslauth is not None)
    paths.extend(partner.nrpassw_file for partner in config.partners if partner.nrpassw_file is not None)
    if config.admin is not None and config.admin.token_file is not None:
        paths.append(config.admin.token_file)
    return tuple(dict.fromkeys(paths))


@dataclass(frozen=True, slots=True)
class FileState:
    target: str  # the path with every symlink resolved
    stat: tuple[int, int, int, int, int] | None  # dev, inode, size, mtime_ns, ctime_ns; None: cannot stat
    digest: bytes | None  # of the content; None: cannot read

    @property
    def content(self) -> tuple[bool, bytes | None]:
        """What a change is judged on: whether the file is there, and what it holds."""
        return self.stat is not None, self.digest


def read_state(path: Path, previous: FileState | None) -> FileState:
    """The file's state; its content is read again only when the target or the stat moved."""
    target = os.path.realpath(path)
    try:
        st = os.stat(path)
    except OSError:
        return FileState(target, None, None)
    signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if previous is not None and previous.target == target and previous.stat == signature:
        return previous
    if not stat.S_ISREG(st.st_mode):
        # A FIFO would block the open, a device never end: such a file is never the configuration's
        # (the reload it triggers says what it is); its stat signature stands for its content.
        return FileState(target, signature, repr(signature).encode())
    digest = hashlib.blake2b(digest_size=16)
    left = _DIGEST_LIMIT
    try:
        with open(path, "rb") as file:
            while left > 0 and (chunk := file.read(min(_READ_CHUNK, left))):
                digest.update(chunk)
                left -= len(chunk)
    except OSError:
        return FileState(target, signature, None)
    return FileState(target, signature, digest.digest())


def read_states(paths: Iterable[Path], previous: dict[Path, FileState]) -> dict[Path, FileState]:
    return {path: read_state(path, previous.get(path)) for path in paths}


def changed_files(before: dict[Path, FileState], after: dict[Path, FileState]) -> list[Path]:
    """Files watched in both whose content changed, appeared or disappeared."""
    return [path for path, state in after.items() if path in before and before[path].content != state.content]


class Watcher:
    """Polls the files of the running configuration and asks for a reload once a change settles."""

    def __init__(
        self,
        config: Callable[[], Config],
        reload: Callable[[], Awaitable[Any]],
        config_path: Path | None = None,
    ) -> None:
        self._config = config  # the running configuration: what to watch, and `reload.watch/interval`
        self._reload = reload
        self._config_path = config_path
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start watching from the files' states now.

        The first states are read here, on the loop (a dozen small files, once), so that a change
        made as soon as the runtime is started or reloaded is not taken for the starting point.
        """
        if not self.running:
            paths = watched_files(self._config(), self._config_path)
            self._task = asyncio.get_running_loop().create_task(self._run(read_states(paths, {})))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @staticmethod
    def period(settings: Reload) -> float:
        return max(0.05, min(settings.interval / 2, 1.0))

    async def _run(self, states: dict[Path, FileState]) -> None:
        loop = asyncio.get_running_loop()
        logs.event("watching", files=len(states), interval_s=self._config().reload.interval)
        pending: dict[Path, None] = {}
        last_change = 0.0
        while True:
            config = self._config()
            settings = config.reload
            if not settings.watch:  # a reload turned watch mode off
                logs.event("watching_stopped")
                return
            await asyncio.sleep(self.period(settings))
            paths = watched_files(self._config(), self._config_path)
            current = await asyncio.to_thread(read_states, paths, states)
            changes = changed_files(states, current)
            states = current
            if changes:
                pending.update(dict.fromkeys(changes))
                last_change = loop.time()
                continue
            if pending and loop.time() - last_change >= settings.interval:
                logs.event("files_changed", files=[str(path) for path in pending])
                pending = {}
                try:
                    await self._reload()
                except Exception as exc:  # a bug in a reload must not end watching
                    logs.event("internal_error", logging.ERROR, error=f"reload: {type(exc).__name__}: {exc}")
