"""The instruments around the compiler: benchmarks (`bench`, `bench_memory`), the peers they
measure against (`peer`, with the peers' own environments in `peer/`), the soak run, and the
browser harness the tests and benchmarks open pages with. They import the compiler; the
compiler never imports them, and the wheel does not carry them."""
