"""`make bench`: every benchmark in this folder, one after the other (never in parallel: shared cores), then
the projection that combines their results. About 7 minutes on the 2-core machine once the generated data
is cached (first run: + ~3 min of CT volumes for build/scaling, + ~3 min of warehouse manifests, 1.1 GB)."""

from bench import (
    bench_build,
    bench_harmonize,
    bench_loader,
    bench_object_storage,
    bench_peer,
    bench_reports,
    bench_scaling,
    bench_storage,
    bench_warehouse,
    projection,
    text_throughput,
)

if __name__ == "__main__":
    bench_harmonize.main()
    bench_build.main()
    bench_peer.main()
    bench_scaling.main()
    bench_loader.main()
    bench_loader.main(rounds=3, corpus="ct")
    text_throughput.main()
    bench_reports.main()
    bench_storage.main()
    bench_object_storage.main()
    bench_warehouse.main()
    projection.main()
