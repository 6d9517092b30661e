"""The QA dry run on Shadow: benchmark suites, judges, the promotion gate, corrections."""
