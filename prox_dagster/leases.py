"""Leases: at most one process computes a stage of a shard at a time, across runs and machines.

A lease is ``.leases/{asset}/{shard}.lock`` in the store, naming its holder and renewed by a
heartbeat. Locally it is an ``flock`` the kernel releases when the holder dies; on S3 every change
is a conditional write (``If-None-Match``/``If-Match``), and a lease is taken over only when its
holder is provably gone. A storage error is raised, never read as "nobody holds it".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class LeaseError(RuntimeError):
    """The lease could not be taken in time, or its holder lost it."""


def holder_record(owner: str) -> dict:
    now = time.time()
    return {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": now,
            "heartbeat": now}


def describe(record: dict | None) -> str:
    if not record:
        return "another process"
    age = time.time() - float(record.get("heartbeat") or 0)
    return (f"run {record.get('owner')} (pid {record.get('pid')} on {record.get('host')}, "
            f"heartbeat {age:.0f}s ago)")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_gone(record: dict, now: float | None = None,
                stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the process that wrote ``record`` is provably gone: it ran on this host and its
    pid is dead, or its heartbeat stopped."""
    now = time.time() if now is None else now
    if record.get("released"):
        return True
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) \
            and not process_alive(record["pid"]):
        return True
    try:
        return now - float(record.get("heartbeat")) > stale_after_s
    except (TypeError, ValueError):
        return False  # a record we cannot read the age of: wait for its heartbeat to tell


class _Heartbeat:
    """Calls ``beat()`` every ``interval`` seconds until stopped; remembers its first error."""

    def __init__(self, beat: Callable[[], None], interval: float):
        self._beat, self._interval = beat, interval
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="prox-lease-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except BaseException as exc:  # a lost lease, a storage error: the holder is told
                self.error = exc
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Lease:
    """A held lease; ``check()`` raises when its holder lost it (S3: taken over after the
    heartbeat stopped reaching the store)."""

    def __init__(self, location: str, heartbeat: _Heartbeat | None = None):
        self.location = location
        self.heartbeat = heartbeat

    def check(self) -> None:
        if self.heartbeat is not None and self.heartbeat.error is not None:
            raise LeaseError(f"lost the lease {self.location}: {self.heartbeat.error}")


@contextlib.contextmanager
def local_lease(path: Path, owner: str, *, wait_s: float, poll_s: float,
                waiting: Callable[[str], None] | None, what: str,
                heartbeat_s: float = HEARTBEAT_S) -> Iterator[Lease]:
    """An ``flock`` on ``path``: see the module docstring."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = describe(_read_local(path))
            if time.monotonic() > deadline:
                raise LeaseError(f"{what} is being computed by {holder} for more than "
                                 f"{wait_s:.0f}s; not computing it twice") from None
            if waiting and not told:
                waiting(holder)
                told = True
            time.sleep(poll_s)
            continue
        try:  # the holder before us may have removed the file we locked: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = holder_record(owner)

    def beat() -> None:
        record["heartbeat"] = time.time()
        data = json.dumps(record).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    try:
        beat()
        pulse = _Heartbeat(beat, heartbeat_s)
        try:
            yield Lease(str(path), pulse)
        finally:
            pulse.stop()
    finally:
        # removed while still locked, so a waiter that locked this file sees it is gone
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _read_local(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # being written, or just removed: only a message reads it


def lease_held(path: Path) -> bool:
    """Whether a process holds the local lease file ``path`` (a file left by a killed holder
    is not held)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _precondition_failed(exc: BaseException) -> bool:
    return isinstance(exc, FileExistsError) or "pre-condition" in str(exc) \
        or "PreconditionFailed" in str(exc)


@contextlib.contextmanager
def s3_lease(fs, path: str, owner: str, *, wait_s: float, poll_s: float,
             waiting: Callable[[str], None] | None, what: str,
             heartbeat_s: float = HEARTBEAT_S,
             stale_after_s: float = STALE_AFTER_S) -> Iterator[Lease]:
    """A lock object under conditional writes: see the module docstring. ``fs``: an s3fs
    file system, ``path``: ``bucket/key``."""
    bucket, key = path.split("/", 1)
    deadline = time.monotonic() + wait_s
    told = False
    record = holder_record(owner)
    etag = None
    while etag is None:
        try:
            etag = fs.pipe_file(path, json.dumps(record).encode(), mode="create")["ETag"]
            break
        except Exception as exc:
            if not _precondition_failed(exc):
                raise LeaseError(f"cannot create the lease s3://{path}: {exc}") from exc
        held, held_etag = _read_s3(fs, path)
        if held is None:
            continue  # released between our two requests: create it again
        if holder_gone(held, stale_after_s=stale_after_s):
            try:  # taken over only if it is still the lease we judged gone
                record = holder_record(owner)
                etag = fs.pipe_file(path, json.dumps(record).encode(), IfMatch=held_etag)["ETag"]
                break
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise LeaseError(f"cannot take over the lease s3://{path}: {exc}") from exc
                continue
        if time.monotonic() > deadline:
            raise LeaseError(f"{what} is being computed by {describe(held)} for more than "
                             f"{wait_s:.0f}s; not computing it twice")
        if waiting and not told:
            waiting(describe(held))
            told = True
        time.sleep(poll_s)
    state = {"etag": etag}

    def beat() -> None:
        record["heartbeat"] = time.time()
        try:
            state["etag"] = fs.pipe_file(path, json.dumps(record).encode(),
                                         IfMatch=state["etag"])["ETag"]
        except Exception as exc:
            if _precondition_failed(exc):
                raise LeaseError("another run took it over") from exc
            raise

    pulse = _Heartbeat(beat, heartbeat_s)
    try:
        yield Lease(f"s3://{path}", pulse)
    finally:
        pulse.stop()
        with contextlib.suppress(Exception):  # someone took it over: theirs now, left alone
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=state["etag"])
        fs.invalidate_cache(path)


def _read_s3(fs, path: str) -> tuple[dict | None, str | None]:
    """The lease's record and the ETag it was read at (None: no lease). The ETag is read before
    and after the body, so the two belong together. A record without a heartbeat (not one of
    ours, or cut short) is as old as the object."""
    for _ in range(5):
        try:
            info = fs.info(path, refresh=True)
            body = fs.cat_file(path)
            after = fs.info(path, refresh=True)["ETag"]
        except FileNotFoundError:
            return None, None
        if info["ETag"] == after:
            try:
                record = json.loads(body)
            except ValueError:
                record = None
            if not isinstance(record, dict) or "heartbeat" not in record:
                modified = info.get("LastModified")
                record = {**(record if isinstance(record, dict) else {}),
                          "heartbeat": modified.timestamp() if modified else None}
            return record, after
    return {}, None


@contextlib.contextmanager
def run_heartbeat(store, run_id: str, heartbeat_s: float = HEARTBEAT_S) -> Iterator[None]:
    """While a run's step works on shards, ``.runs/{run_id}.json`` says which process runs it
    and when it last showed it was alive: the audit tells a run whose worker was killed (its
    status stays STARTED when nothing monitors it) from one that is working."""
    record = holder_record(run_id)

    def beat() -> None:
        record["heartbeat"] = time.time()
        store.write_text(json.dumps(record), ".runs", f"{run_id}.json")

    beat()
    pulse = _Heartbeat(beat, heartbeat_s)
    try:
        yield
    finally:
        pulse.stop()
        beat()


def run_alive(store, run_id: str, started_at: float | None, now: float | None = None) -> bool:
    """Whether a run whose status says STARTED is still working: its heartbeat (written while
    its steps run) is not provably gone, or it has none yet and started within
    :data:`STALE_AFTER_S` (loading its code, say)."""
    now = time.time() if now is None else now
    location = store.location(".runs", f"{run_id}.json")
    try:
        record = json.loads(store.read_text(location))
    except FileNotFoundError:
        return started_at is None or now - started_at <= STALE_AFTER_S
    except ValueError:
        return True  # being rewritten: it was just alive
    return not holder_gone(record, now)
