"""Send a steady mix of demo tasks until interrupted."""

from __future__ import annotations

import itertools
import random
import sys
import time

from app import generate_report, process_order, send_email


def main() -> None:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    for n in itertools.count():
        roll = random.random()
        if roll < 0.6:
            process_order.delay(n)
        elif roll < 0.9:
            send_email.delay(f"user{n}@example.com")
        else:
            generate_report.delay(random.choice(["daily", "weekly"]))
        time.sleep(1.0 / rate)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
