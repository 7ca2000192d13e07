"""The chaos suite: mailbridge under bad input and faults."""
