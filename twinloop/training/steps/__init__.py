"""The steps of a training cycle, one module each; `twinloop.training.runner` runs them.

A step opens its own transactions (`sessionmaker.begin()`) and commits its results with
the cycle's next state, or returns an `Ending` for the runner to record:

1-2. `collect`: pending examples cleaned; accepted ones become the cycle's new items.
3-5. `train`: new items mixed with replay, adapters trained (weak spots of a rejected
     cycle oversampled, `weak_spots`) and registered with their lineage.
5-6. `stage`: the cycle's snapshot made once and staged on Shadow.
7-8. `qa_round`: the QA gate on Shadow; a failed round with rounds left adds corrections
     and trains again.
`finish` ends a cycle and hands back the items it did not learn.
"""
