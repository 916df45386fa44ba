# make bench: the worker beside a Lambda-style baseline and the backend's ceiling, same run
# (kinesalite + dynalite, 200,000 readings on 4 and on 64 shards, 3 repeats, medians; CPU per
# record over the whole run and over the steady window; beside it the worker with the S3
# archive on and with the insights on, their own columns, and "busy", the worker with its
# writes answered at once by the fault proxy; each run on a quiet machine, the baseline last in
# each round), then ours once more with py-spy attached over its steady window only
# (.bench/steady-ours-N-shards.folded, and its top functions printed). Beside them the
# reference: the worker of REFERENCE (80157bd, the tree issue 16 measured at about 15 µs a
# record), a fixed point that tells the machine's phase ("ours / reference"; REFERENCE= leaves
# it out). Bounded: <= 45 min (measured 24 min on 2026-12-04, before archive60s, floor and
# busy; 38 min with a revision beside on 2026-12-07); with BEFORE=REV (`make bench
# BEFORE=main~3`) the worker of that git revision runs too, in its own column: <= 55 min.
REFERENCE ?= 80157bd
# Then the latency scenario (tests/bench/latency.py, <= 3 min): put -> stored p50/p99 with a
# Lambda-style polling reader on the same stream, telemax polling vs fan-out, on kinesis-local
# in a private network namespace (root; skipped with a line where namespaces are not allowed).
# make bench-idle: what a quiet shard costs one worker (4 and 128 idle shards; the slope) and
# how soon a record after a quiet spell is stored. Bounded: <= 7 min.
# make bench-request: what one BatchWriteItem costs our client against a null server (the
# server's own work left out). Bounded: <= 2 min. (`python -m tests.bench.request_cost --reads
# 10000 --tls`: a GetRecords answer's too, and each over TLS as well: about 1.5 min.)
# make bench-batch: what a 10,000-reading GetRecords answer costs our own stages in process
# (read, convert, write; no I/O, no signing), with BEFORE=REV beside that revision's, rounds
# interleaved. Stable to a few per cent. Bounded: <= 2 min.
# make bench-lambda: the Lambda handler's cold start and warm CPU per record, its writes on
# the lean path (the default) beside aiobotocore's, 200 events of 100 readings, 3 rounds
# (kinesalite + dynalite), then the same with the S3 archive on (moto's S3). Bounded: <= 3 min
# each (measured 22 s and 36 s).
.PHONY: bench bench-idle bench-latency bench-request bench-batch bench-lambda
bench: $(STAMP) emulators
	timeout $(if $(BEFORE),3300,2700) $(PY) -m tests.bench --records 200000 --shards 4 64 --repeats 3 --steady-profile $(if $(REFERENCE),--reference $(REFERENCE)) $(if $(BEFORE),--before $(BEFORE))
	timeout 180 $(PY) -m tests.bench.latency

bench-latency: $(STAMP) emulators
	timeout 180 $(PY) -m tests.bench.latency

bench-idle: $(STAMP) emulators
	timeout 420 $(PY) -m tests.bench.idle --shards 4 128 --window 60 --probes 10

bench-request: $(STAMP)
	timeout 120 $(PY) -m tests.bench.request_cost

bench-batch: $(STAMP)
	timeout 120 $(PY) -m tests.bench.batch_cost $(if $(BEFORE),--before $(BEFORE))

bench-lambda: $(STAMP) emulators
	timeout 180 $(PY) -m tests.bench.lambda_cost
	timeout 180 $(PY) -m tests.bench.lambda_cost --archive
