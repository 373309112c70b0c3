"""Side-by-side benchmarks against peers (not shipped to the device); run with `make bench`."""
