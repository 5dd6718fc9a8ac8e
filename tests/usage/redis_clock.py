"""Redis's clock for tests that must not straddle a second or a minute."""

import time

import redis


def quiet_moment(client: redis.Redis) -> int:
    """Wait (under ~2.5 s) until Redis's clock is early in a second and not in a minute's last 2 s; return it."""
    while True:
        seconds, micros = client.time()
        if seconds % 60 >= 58:
            time.sleep(60 - seconds % 60 - micros / 1e6 + 0.02)
        elif not 10_000 <= micros < 500_000:
            time.sleep((1_000_000 - micros) / 1e6 + 0.02 if micros >= 500_000 else 0.02)
        else:
            return seconds
