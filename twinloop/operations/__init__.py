"""Operations: what operators look at and do across every service (status, snapshots,
swap, rollback). It may read every domain service; none of them imports it."""
