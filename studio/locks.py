"""One runner at a time for a job: `with job_lock("name") as held: ...`.

PostgreSQL: a session advisory lock (`pg_try_advisory_lock`), held by this process's database
connection; the server releases it if the process dies. SQLite (`make run`): an exclusive `flock`
on a lock file named after the database file, which the kernel releases if the process dies; an
in-memory database (tests) lives in one process, so a lock in that process is enough. None of
them waits: a second runner is told at once (`held` is False) and does nothing.
"""

import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

_in_process: dict[str, threading.Lock] = {}


def _key(name: str) -> int:
    """A stable signed 64-bit key for the advisory lock (one namespace per job name)."""
    return int.from_bytes(hashlib.sha256(f"studio-job:{name}".encode()).digest()[:8], "big", signed=True)


def lock_file(name: str) -> Path:
    """The lock file of job `name` for this SQLite database file: one per database, so that two
    databases (`make run` and a copy of it) never block each other."""
    database = os.path.abspath(connection.settings_dict["NAME"])
    digest = hashlib.sha256(database.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"studio-{digest}-{name}.lock"


@contextmanager
def job_lock(name: str) -> Iterator[bool]:
    """Yields True if this process now runs job `name`, False if another runner holds it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [_key(name)])
            held = cursor.fetchone()[0]
        try:
            yield held
        finally:
            if held:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [_key(name)])
    elif connection.vendor == "sqlite" and connection.is_in_memory_db():
        lock = _in_process.setdefault(name, threading.Lock())
        held = lock.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                lock.release()
    else:
        with open(lock_file(name), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = False
            else:
                held = True
            try:
                yield held
            finally:
                if held:
                    fcntl.flock(handle, fcntl.LOCK_UN)
