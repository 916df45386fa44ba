"""`python -m tests.leasecost` (`make lease-cost`): see :mod:`tests.leasecost`."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from devkit.faultproxy import FaultProxy
from tests import leasecost
from tests.conftest import emulator
from tests.leasecost.fleet import TEST_KNOBS, EveryShardProducer, Fleet, say
from tests.leasecost.phases import (
    Figures,
    phase_failover,
    phase_handover,
    phase_new_worker,
    phase_start,
    phase_steady,
    verify_records,
)
from tests.leasecost.report import summary
from tests.support import kill_all, make_stack


def run(args: argparse.Namespace) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="telemax-lease-cost-"))
    figures = Figures(args.workers, args.shards, args.lease_duration_s)
    with ExitStack() as stack:
        kinesis = stack.enter_context(emulator("kinesalite", log_dir))
        dynamodb = stack.enter_context(emulator("dynalite", log_dir))
        proxy = stack.enter_context(FaultProxy(dynamodb.endpoint, count_tables=True))
        tables = make_stack(
            log_dir,
            kinesis_endpoint=kinesis.endpoint,
            dynamodb_endpoint=dynamodb.endpoint,
            lease_duration_s=args.lease_duration_s,
            TELEMAX_LOG_LEVEL="info",
        )
        for knob in TEST_KNOBS:
            tables.env.pop(knob, None)
        stack.callback(kill_all, tables)
        tables.setup(shards=args.shards)
        roles = {
            tables.lease_table: "lease",
            tables.member_table: "members",
            tables.table: "records",
            tables.dlq_table: "dead-letter",
        }
        fleet = Fleet(tables, proxy, args.shards)
        producer = EveryShardProducer(tables, args.rate) if args.rate > 0 else None
        if producer:
            producer.start()
        load = f"producer at ~{args.rate:.0f} records/s over every shard" if producer else "idle"
        say(f"stream of {args.shards} shards, {load}; logs in {log_dir}")
        phase_start(fleet, figures, roles)
        phase_steady(fleet, figures, roles, args.steady_s)
        phase_failover(fleet, figures, roles, "w1")
        phase_handover(fleet, figures, roles, "w2")
        phase_new_worker(fleet, figures, roles, f"w{args.workers + 1}")
        verify_records(fleet, figures, producer)
        codes = {w.worker_id: w.stop() for w in fleet.live()}
        say(
            f"  workers stopped with SIGTERM: exit codes {codes}; proxy could not read "
            f"{proxy.table_errors} answers"
        )
        summary(figures)
    reached = None not in (
        figures.balanced_s,
        figures.failover_s,
        figures.handover_s,
        figures.share_s,
    )
    return 0 if figures.missing == 0 and reached else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.leasecost",
        description=leasecost.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument(
        "--rate", type=float, default=200.0, help="records per second (0: idle shards)"
    )
    parser.add_argument("--steady-s", type=float, default=60.0)
    parser.add_argument("--lease-duration-s", type=float, default=10.0)
    args = parser.parse_args()
    if args.workers < 3:
        parser.error("--workers must be at least 3 (one is killed, one stopped, one stays)")
    command = shlex.join(["python", "-m", "tests.leasecost", *sys.argv[1:]])
    say(f"lease-cost: `{command}`, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    started = time.monotonic()
    code = run(args)
    say(f"lease-cost: {time.monotonic() - started:.0f} s in all, exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
