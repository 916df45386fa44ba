"""`make soak`: a bounded run with random faults and bad records, ending with a ledger.

kinesalite + dynalite on 127.0.0.1, three workers talking to them through fault-injecting
proxies (random errors, UnprocessedItems, resets and delays on more than 10 % of requests),
a producer writing for ``--seconds`` with more than 1 % bad records, one worker SIGKILLed and
replaced halfway. At the end TELEMAX and the dead-letter table are scanned: every produced
record must be in exactly one of them. Exit code 0 only when nothing is missing.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import orjson

from devkit.faultproxy import FaultProxy, Rule
from tests.conftest import emulator
from tests.support import Stack, kill_all, make_stack, readings, wait_until

DYNAMODB_FAULTS = [
    Rule("BatchWriteItem", "error", rate=0.05),
    Rule("BatchWriteItem", "unprocessed", rate=0.05, fraction=0.5),
    Rule("BatchWriteItem", "error", rate=0.02, code="InternalServerError", status=500),
    Rule("*", "reset", rate=0.02),
    Rule("*", "delay", rate=0.02, delay_s=0.5),
    Rule("UpdateItem", "error", rate=0.03),
]
KINESIS_FAULTS = [
    Rule("GetRecords", "error", rate=0.07),
    Rule("GetRecords", "error", rate=0.03, code="InternalFailure", status=500),
    Rule("*", "reset", rate=0.02),
    Rule("GetRecords", "error", rate=0.01, code="ExpiredIteratorException"),
]
BAD_KINDS = [
    lambda n: b"not json %d" % n,
    lambda n: b'{"hardwareID": "", "Timestamp": "2026-01-01T00:00:00Z", "n": %d}' % n,
    lambda n: b'{"hardwareID": "h", "Timestamp": "soon", "n": %d}' % n,
    lambda n: b"\xff\xfe %d" % n,
    lambda n: b"[%d]" % n,
]


class SoakProducer(threading.Thread):
    """Valid readings with ``bad_share`` of bad records mixed in; remembers everything."""

    def __init__(self, stack: Stack, rate: float, bad_share: float, seed: int) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.stack = stack
        self.rate = rate
        self.bad_share = bad_share
        self.rng = random.Random(seed)
        self.good: set[tuple[str, str]] = set()
        self.bad: set[bytes] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        batch, offset = 50, 0
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                records: list[dict[str, object]] = []
                sent_good: list[tuple[str, str]] = []
                sent_bad: list[bytes] = []
                for reading in readings(batch, prefix="SOAK", offset=offset):
                    if self.rng.random() < self.bad_share:
                        bad = self.rng.choice(BAD_KINDS)(offset + len(records))
                        records.append({"Data": bad, "PartitionKey": f"bad-{len(records)}"})
                        sent_bad.append(bad)
                    else:
                        records.append(
                            {"Data": orjson.dumps(reading), "PartitionKey": reading["hardwareID"]}
                        )
                        sent_good.append((reading["hardwareID"], reading["Timestamp"]))
                offset += batch
                answer = self.stack.kinesis.put_records(
                    StreamName=self.stack.stream, Records=records
                )
                if answer["FailedRecordCount"]:
                    raise RuntimeError(f"{answer['FailedRecordCount']} records not accepted")
                self.good.update(sent_good)
                self.bad.update(sent_bad)
                self.stop.wait(max(0.0, batch / self.rate - (time.monotonic() - started)))
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def soak(seconds: float, rate: float, bad_share: float, seed: int) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="telemax-soak-"))
    print(f"soak: {seconds:.0f} s at ~{rate:.0f} records/s, {bad_share:.1%} bad, logs {log_dir}")
    with ExitStack() as stack:
        kinesis = stack.enter_context(emulator("kinesalite", log_dir))
        dynamodb = stack.enter_context(emulator("dynalite", log_dir))
        kproxy = stack.enter_context(FaultProxy(kinesis.endpoint, KINESIS_FAULTS, seed=seed))
        dproxy = stack.enter_context(FaultProxy(dynamodb.endpoint, DYNAMODB_FAULTS, seed=seed))
        s = make_stack(
            log_dir, kinesis_endpoint=kinesis.endpoint, dynamodb_endpoint=dynamodb.endpoint
        )
        stack.callback(kill_all, s)
        s.setup(shards=4)
        via_proxies = {
            "AWS_ENDPOINT_URL_KINESIS": kproxy.endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": dproxy.endpoint,
            "TELEMAX_LOG_LEVEL": "info",
            "TELEMAX_AWS_READ_TIMEOUT_S": "2",
        }
        workers = [s.worker(f"soak-{n}", **via_proxies) for n in range(1, 4)]
        producer = SoakProducer(s, rate, bad_share, seed)
        producer.start()
        started = time.monotonic()
        time.sleep(seconds / 2)
        victim = workers[0]
        victim.signal(signal.SIGKILL)
        print(f"soak: SIGKILLed {victim.worker_id} after {time.monotonic() - started:.0f} s")
        workers.append(s.worker("soak-4", **via_proxies))
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        producer.stop.set()
        producer.join(30)
        if producer.error:
            raise producer.error
        produced = len(producer.good) + len(producer.bad)
        print(f"soak: produced {produced} records; waiting for the fleet to drain")
        try:
            wait_until(
                lambda: (
                    s.count() >= len(producer.good) and s.count(s.dlq_table) >= len(producer.bad)
                ),
                90,
                "every record stored or dead-lettered",
                every=2.0,
            )
        except AssertionError as exc:
            print(f"soak: {exc}")
        stored = {(i["hardwareID"]["S"], i["Timestamp"]["S"]) for i in s.scan()}
        letters = [i.get("data", {}).get("B", b"") for i in s.scan(s.dlq_table)]
        codes = [w.stop() for w in workers[1:]]
        return ledger(producer, stored, letters, kproxy, dproxy, codes)


def ledger(
    producer: SoakProducer,
    stored: set[tuple[str, str]],
    letters: list[bytes],
    kproxy: FaultProxy,
    dproxy: FaultProxy,
    codes: list[int],
) -> int:
    dead = set(letters)
    missing_good = producer.good - stored
    missing_bad = producer.bad - dead
    unexpected = (stored - producer.good) | (dead - producer.bad)
    faults = sum(kproxy.injected.values()) + sum(dproxy.injected.values())
    requests = faults + sum(kproxy.forwarded.values()) + sum(dproxy.forwarded.values())
    rows = [
        ("produced", len(producer.good) + len(producer.bad)),
        ("  valid", len(producer.good)),
        ("  bad", len(producer.bad)),
        ("stored in TELEMAX", len(stored & producer.good)),
        ("dead-lettered", len(dead & producer.bad)),
        ("missing", len(missing_good) + len(missing_bad)),
        ("in neither or in the wrong table", len(unexpected)),
        ("dead letters written twice", len(letters) - len(dead)),
    ]
    print("soak ledger")
    for name, value in rows:
        print(f"  {name:<34} {value:>8,}")
    share = faults / max(1, requests)
    print(f"  {'faults injected / requests':<34} {faults:>8,} / {requests:,} ({share:.1%})")
    kinds = sorted(
        (f"{op}:{kind}", n) for (op, kind), n in (kproxy.injected + dproxy.injected).items()
    )
    print("  faults by kind: " + ", ".join(f"{name} {n}" for name, n in kinds))
    print(f"  surviving workers' exit codes      {codes}")
    ok = not missing_good and not missing_bad and not unexpected and not any(codes)
    ok = (
        ok
        and faults / max(1, requests) >= 0.10
        and len(producer.bad) / max(1, len(producer.good) + len(producer.bad)) >= 0.01
    )
    print("soak: OK, every record is in exactly one table" if ok else "soak: FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--bad-share", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    return soak(args.seconds, args.rate, args.bad_share, args.seed)


if __name__ == "__main__":
    sys.exit(main())
