"""`make bench`: run every benchmark in this folder, one after the other (never in parallel: shared cores)."""

from bench import bench_harmonize, text_throughput

if __name__ == "__main__":
    bench_harmonize.main()
    text_throughput.main()
