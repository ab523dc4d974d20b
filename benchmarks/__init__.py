"""Speed and memory measurements of the recipes and the library, one command
each: ``python -m benchmarks.NAME`` from the repository root (see
``benchmarks/README.md``). Not part of the installed package."""
