"""The MKA1 usage API: its contract, a client, and a local emulator of it."""
