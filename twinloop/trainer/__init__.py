"""The trainer process (`twinloop trainer`): its wiring and loop, and starting and stopping it."""
