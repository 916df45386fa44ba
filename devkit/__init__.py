"""The development kit: the demo, embedded AWS backends (moto, kinesalite, dynalite), worker
processes and a fault-injecting proxy. Nothing here runs in production."""
