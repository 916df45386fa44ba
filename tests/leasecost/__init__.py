"""`make lease-cost` (issue 11): what the lease protocol costs a real fleet, and how fast it moves.

kinesalite + dynalite on 127.0.0.1, a ``--shards`` stream, ``--workers`` real worker processes
(``python -m consumer run`` with their own defaults; lease duration ``--lease-duration-s``)
whose DynamoDB traffic goes through a counting proxy (devkit.faultproxy, no faults), and a
producer writing ``--rate`` readings per second spread over every shard. The producer and this
script's own checks talk to the emulators directly, so only the workers are counted.

Phases, each timed from its own event:

1. start the workers: until every shard is owned and each worker holds its even share;
2. steady ``--steady-s``: lease-table items read and written per second by DynamoDB
   operation, the records and dead-letter tables beside;
3. SIGKILL one worker: fail-over — until every lease it held is owned by a live worker that
   processes it (its ``shard_processing`` log event, or the checkpoint moving under it);
4. SIGTERM another: hand-over, measured the same way;
5. start a new worker: until it holds ceil(shards / live workers) - 1 leases.

Then the producer stops and TELEMAX is read back: every produced record must be there. The
figures are printed beside the KCL 2.x model for the same fleet (an eventually consistent
full Scan every 20 s per worker, a renewal per lease every lease duration / 3, the same
checkpoints). Everything is observed through the lease table, the proxy's counts, the
workers' /metrics and logs — never the workers' internals — so it keeps measuring when the
protocol changes. Timings are printed, not asserted; exit code 1 only when records are
missing or the fleet never reached a phase's state.
"""
