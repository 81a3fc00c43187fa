"""The policy language and every routing decision. Pure: no I/O, no clock, no randomness."""
