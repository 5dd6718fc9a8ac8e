"""Run the same work in several threads at once, each with its own database connection."""

import threading

from django.db import connection


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
