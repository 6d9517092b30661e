"""Slots, snapshots and releases: which snapshot each slot serves, and which slot is active."""
