"""Sans-I/O wire protocol: formats, state machines, crypto composition. No sockets, no clock reads."""
