"""What becomes of a cycle's learning items when the cycle does not keep them.

A cycle's new items are `accepted` from cleaning on, while it trains, while QA gates it and
while its canary runs. A cycle that ends without its adapters in Active hands them back:
the trainer does for a failed, abandoned or QA-rejected cycle (`twinloop.training.steps.
finish`), the gateway's canary for a cycle it rolled back (`twinloop.canary.service`).
Both call `service` here, inside the transaction that records the cycle's end, so the rules
live once, below both: `repository` (the query), `service` (the rules).
"""
