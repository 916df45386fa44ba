"""Adapters of the runtime: the lean AWS path (SigV4, keep-alive HTTP/1.1, botocore-identical
answers) for the calls a worker makes per record and per beat."""
