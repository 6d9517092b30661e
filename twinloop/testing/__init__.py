"""Test support that tests/ and bench/ both import: fake engine, router, knowledge store and
trainer, LoRA adapter folders and staging one through the admin API, and the learning data
(made-up facts, general holdout).

Nothing in production imports it (an import-linter contract keeps it so)."""
