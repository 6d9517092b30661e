"""twinloop: blue/green serving for LLMs that keep learning."""

__version__ = "0.1.0"
