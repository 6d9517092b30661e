"""The canary of a staged Shadow on live traffic: who gets which arm, and when it ends.

This package is pure: no I/O, no database, no engines. It imports only the standard
library, numpy/scipy and twinloop's core (`twinloop.settings`, `twinloop.errors`); the
service that persists counts and swaps releases builds on it.
"""
