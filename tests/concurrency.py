"""Run work in other threads, each with its own database connection: the same work in several at once (`at_once`),
or one piece in the background, optionally inside a transaction held open until the test lets it commit
(`Background`)."""

import threading

from django.db import connection, transaction


def at_once(work, count: int) -> tuple[list, list[BaseException]]:
    """Call `work(i)` in `count` threads released together; returns (results, errors)."""
    barrier = threading.Barrier(count)
    results, errors = [], []

    def run(index):
        barrier.wait()
        try:
            results.append(work(index))
        except BaseException as error:  # collected for the test to assert on
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


class Background:
    """`work()` in a thread of its own. With `hold_open`, inside a transaction that stays open once the work is done
    (the constructor returns then) until `finish()`; otherwise the constructor returns at once. `finish()` lets it
    commit and waits for the thread; then `result` and `errors` say how it went."""

    def __init__(self, work, *, hold_open: bool = False):
        self.result, self.errors = None, []
        self._done, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(work, hold_open))
        self._thread.start()
        if hold_open:
            assert self._done.wait(timeout=30), "the work did not finish"

    def _run(self, work, hold_open: bool) -> None:
        try:
            if hold_open:
                with transaction.atomic():
                    self.result = work()
                    self._done.set()
                    self._release.wait(timeout=30)
            else:
                self.result = work()
        except BaseException as error:  # collected for the test to assert on
            self.errors.append(error)
        finally:
            self._done.set()
            connection.close()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def finish(self) -> None:
        self._release.set()
        self._thread.join()
