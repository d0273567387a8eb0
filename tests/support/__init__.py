"""Test helpers shared by every layer: fixtures data, processes, servers and agreement checks."""
