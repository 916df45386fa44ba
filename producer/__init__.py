"""telemax producer: generates realistic readings and ships them to Kinesis with PutRecords."""
