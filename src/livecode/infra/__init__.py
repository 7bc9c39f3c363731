"""The pieces that live in Redis in the distributed mode and in memory in the embedded one, each
a port with two implementations; runtime.py picks one set, once."""
