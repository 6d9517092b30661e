"""The canary of a staged Shadow on live traffic: who gets which arm, and when it ends.

The core is pure — `assignment`, `statistics`, `pairs`, `decision`: no I/O, no database,
no engines; they import only the standard library, numpy/scipy and twinloop's core
(`twinloop.settings`, `twinloop.errors`). Around it, `repository` (queries), `service`
(start, adjust, abort, evaluate and act: swap or roll back through `twinloop.releases`),
`state` (what the request path reads), `schemas` and `watcher` (the evaluation loop).
"""
