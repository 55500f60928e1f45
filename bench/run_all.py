"""`make bench`: run every benchmark in this folder, one after the other (never in parallel: shared cores).
The warehouse benchmark generates 1.1 GB of manifests the first time (~3 min, cached in bench/data/)."""

from bench import bench_harmonize, bench_warehouse, text_throughput

if __name__ == "__main__":
    bench_harmonize.main()
    text_throughput.main()
    bench_warehouse.main()
