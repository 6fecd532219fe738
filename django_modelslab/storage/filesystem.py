"""Content-addressed files on the local disk: atomic, race-safe writes."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time
from collections.abc import Iterator

from django.core.files import File
from django.core.files.storage import FileSystemStorage

from .base import ContentAddressedStorageMixin, Deleted, StoredFile, WantedCheck, refresh_age


class ContentAddressedFileSystemStorage(ContentAddressedStorageMixin, FileSystemStorage):
    """Content-addressed local storage with atomic, race-safe writes.

    Bytes go to a temporary file in the target directory, which is then hard-linked into
    place: readers never see a partial file, and when two writers store the same key at
    once the first link wins and the other simply drops its temporary file.

    Reusing an older stored file sets its modification time to now (:meth:`refresh`), and
    :meth:`delete_stale` moves a file aside before deciding, so a store racing a prune
    never loses its file (docs/deleting.md).
    """

    def put_if_absent(self, name: str, content: File[bytes]) -> bool:
        full_path = self.path(name)
        if self._touch(full_path):
            return False
        tmp_path = self._write_temporary(full_path, content)
        try:
            try:
                os.link(tmp_path, full_path)
            except FileExistsError:
                return False  # someone stored the same bytes first: keep theirs
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                os.replace(tmp_path, full_path)  # no hard links here: same bytes, atomic
            # a private helper of FileSystemStorage that django-stubs leaves out
            self._ensure_location_group_id(full_path)  # type: ignore[attr-defined]
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)

    def refresh(self, name: str) -> bool:
        return self._touch(self.path(name))

    @staticmethod
    def _touch(full_path: str) -> bool:
        """Whether ``full_path`` exists; its modification time set to now when older than
        :func:`~.base.refresh_age`. A file a prune has just moved aside is absent here, so
        the caller writes it again."""
        try:
            modified = os.stat(full_path).st_mtime
        except FileNotFoundError:
            return False
        if time.time() - modified < refresh_age():
            return True
        try:
            os.utime(full_path)
        except FileNotFoundError:
            return False  # moved aside by a prune since the stat
        except PermissionError:
            pass  # someone else's file: kept, but not refreshed
        return True

    def iter_stored(self, prefix: str) -> Iterator[StoredFile]:
        root = self.path(prefix)
        for directory, _dirs, files in os.walk(root):
            for filename in sorted(files):
                full_path = os.path.join(directory, filename)
                try:
                    info = os.stat(full_path, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    name = os.path.relpath(full_path, self.location).replace(os.sep, "/")
                    yield StoredFile(name, info.st_size, info.st_mtime)

    def _delete_batch(
        self, names: list[str], before: float, still_wanted: WantedCheck, result: Deleted
    ) -> None:
        """One batch of :meth:`delete_stale`.

        Each file is first renamed aside (atomic): from then on a store reusing it finds
        nothing and writes it again. The aside file's modification time and then the
        references are checked; a file refreshed or referenced meanwhile is put back.
        """
        aside: dict[str, tuple[str, StoredFile]] = {}
        try:
            for name in names:
                full_path = self.path(name)
                moved = f"{full_path}.pruning-{secrets.token_hex(4)}"
                try:
                    os.rename(full_path, moved)
                except FileNotFoundError:
                    result.gone.append(name)
                    continue
                except OSError as exc:
                    result.errors[name] = f"{type(exc).__name__}: {exc}"
                    continue
                aside[name] = (moved, StoredFile(name, 0, 0.0))  # put back if what follows fails
                info = os.stat(moved)
                if info.st_mtime >= before:  # refreshed by a store since it was listed
                    del aside[name]
                    self._put_back(moved, full_path)
                    result.kept.append(name)
                    continue
                aside[name] = (moved, StoredFile(name, info.st_size, info.st_mtime))
            wanted = set(still_wanted(list(aside))) if aside else set()
        except BaseException:
            for name, (moved, _info) in aside.items():
                self._put_back(moved, self.path(name))
            raise
        for name, (moved, file) in aside.items():
            if name in wanted:
                self._put_back(moved, self.path(name))
                result.kept.append(name)
                continue
            try:
                os.unlink(moved)
            except OSError as exc:
                result.errors[name] = f"{type(exc).__name__}: {exc}"
            else:
                result.deleted.append(file)

    @staticmethod
    def _put_back(moved: str, full_path: str) -> None:
        """Move a file set aside back, unless a store has written the same bytes there."""
        try:
            os.link(moved, full_path)
        except FileExistsError:
            pass  # stored again meanwhile: the same bytes
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            os.replace(moved, full_path)  # no hard links here: same bytes, atomic
            return
        os.unlink(moved)

    def replace(self, name: str, content: File[bytes]) -> None:
        """Atomically put ``content`` in place of whatever ``name`` holds (a repair)."""
        full_path = self.path(name)
        tmp_path = self._write_temporary(full_path, content)
        try:
            os.replace(tmp_path, full_path)
            self._ensure_location_group_id(full_path)  # type: ignore[attr-defined]  # as above
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)

    def _write_temporary(self, full_path: str, content: File[bytes]) -> str:
        """``content`` in a new temporary file beside ``full_path``, synced; its path."""
        directory = os.path.dirname(full_path)
        self._make_directories(directory)
        tmp_path = os.path.join(directory, f".tmp-{secrets.token_hex(8)}.part")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp_path, flags, 0o666)  # the umask applies, as in FileSystemStorage
        try:
            with os.fdopen(fd, "wb") as tmp:
                for chunk in content.chunks():
                    tmp.write(chunk if isinstance(chunk, bytes) else chunk.encode())
                tmp.flush()
                os.fsync(tmp.fileno())
            if self.file_permissions_mode is not None:
                os.chmod(tmp_path, self.file_permissions_mode)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise
        return tmp_path

    def _make_directories(self, directory: str) -> None:
        mode = self.directory_permissions_mode
        missing = []
        path = directory
        while path and not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise FileExistsError(f"{path} exists and is not a directory.") from None
                continue
            if mode is not None:
                os.chmod(path, mode)
