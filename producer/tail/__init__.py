"""``producer tail``: the Kinesis Agent's job - ship every line appended to log files."""
