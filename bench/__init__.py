"""Chronicle benchmarks: ``python -m bench [all|w1|w2|w3|w4|w5]`` prints a table."""
