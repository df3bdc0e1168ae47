"""Qvalia status polling: calls per second with bounded concurrency, against the sequential figure.

    python bench/statuses.py                      # 50 ms latency per call, 400 ids, concurrency 1, 8, 16
    python bench/statuses.py --ids 40 --rate-429 0.05   # the quick version CI runs, with 429s on

The emulator adds `--latency` to every call, so the ideal is concurrency / latency calls per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.emulator import EmulatorServer, Faults, World
from pipelines.qvalia import make_client, poll_statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=400, help="status calls per measurement")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the emulator adds to each call")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--rate-429", type=float, default=0.0, help="share of calls answered 429")
    args = parser.parse_args()

    world = World(seed=9, invoices=max(2 * args.ids, 200))
    ids = sorted(str(i) for i, invoice in world.invoices.items() if invoice["invoice_type"] == "Sales")[
        : args.ids
    ]
    faults = Faults(latency_s=args.latency, rate_429=args.rate_429, retry_after_s=0)
    print(
        f"{len(ids)} status calls, {args.latency * 1000:.0f} ms emulator latency each, 429 rate {args.rate_429:.0%}"
    )
    print(
        f"{'concurrency':>11}{'wall s':>9}{'calls/s':>10}{'ideal/s':>10}{'of ideal':>10}{'429s':>7}{'failed':>8}"
    )
    sequential = None
    with EmulatorServer(world, faults=faults) as server:
        for concurrency in args.concurrency:
            client = make_client(
                server.qvalia_api_key,
                server.account_reg_no,
                base_url=server.qvalia_base_url,
                max_concurrency=concurrency,
            )
            served_before = server.faults_served["429"]
            started = time.perf_counter()
            results = list(poll_statuses(client, ids, concurrency))
            wall = time.perf_counter() - started
            client.close()
            rate = len(ids) / wall
            ideal = concurrency / args.latency
            sequential = sequential or rate
            failed = sum(1 for _, _, error in results if error is not None)
            throttled = server.faults_served["429"] - served_before
            print(
                f"{concurrency:>11}{wall:>9.2f}{rate:>10.1f}{ideal:>10.1f}{rate / ideal:>10.0%}{throttled:>7}{failed:>8}"
            )
    if args.concurrency[0] == 1 and len(args.concurrency) > 1:
        print(f"speed-up of the last row over sequential: {rate / sequential:.1f}x")


if __name__ == "__main__":
    main()
