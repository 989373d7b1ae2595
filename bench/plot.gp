# make bench plot: throughput against in-flight jobs and latency
# percentiles, from the .dat file bench.py writes (one block per Comet
# latency and worker count: inflight_per_process inflight_total jobs/s p50 p95 p99).
# Called as: gnuplot -e "datafile='X.dat'; outfile='X.png'; ceiling=N; seq0=N; seq20=N" plot.gp
set terminal pngcairo size 1400,1000 font "DejaVu Sans,10"
set output outfile
set multiplot layout 2,2 title "comet-worker: mixed stream (70% create) against fake Comet, one run"
set logscale x 2
set logscale y 10
set yrange [5:20000]
set grid
set key top left
set xlabel "in-flight jobs per process (worker.concurrency = amqp.prefetch)"

# Block index = latency index * 3 + worker index (latencies 0, 20; workers 1, 2, 4).
set title "throughput, Comet 0 ms per call"
set ylabel "jobs/s"
plot datafile index 0 using 1:3 with linespoints lw 2 title "1 process", \
     datafile index 1 using 1:3 with linespoints lw 2 title "2 processes", \
     datafile index 2 using 1:3 with linespoints lw 2 title "4 processes", \
     ceiling with lines dt 2 lc rgb "black" title sprintf("broker ceiling %.0f/s", ceiling), \
     seq0 with lines dt 3 lc rgb "red" title sprintf("sequential %.0f/s", seq0)

set title "throughput, Comet 20 ms per call"
plot datafile index 3 using 1:3 with linespoints lw 2 title "1 process", \
     datafile index 4 using 1:3 with linespoints lw 2 title "2 processes", \
     datafile index 5 using 1:3 with linespoints lw 2 title "4 processes", \
     ceiling with lines dt 2 lc rgb "black" title "broker ceiling", \
     seq20 with lines dt 3 lc rgb "red" title sprintf("sequential %.1f/s", seq20)

set ylabel "publish -> result latency, ms (burst)"
set yrange [*:*]
set key top right
set title "latency p50 (solid) / p99 (dashed), Comet 0 ms"
plot for [i=0:2] datafile index i using 1:4 with linespoints lw 2 lc i+1 title sprintf("%d proc p50", 2**i), \
     for [i=0:2] datafile index i using 1:6 with linespoints lw 1 dt 2 lc i+1 title sprintf("%d proc p99", 2**i)

set title "latency p50 (solid) / p99 (dashed), Comet 20 ms"
plot for [i=3:5] datafile index i using 1:4 with linespoints lw 2 lc i-2 title sprintf("%d proc p50", 2**(i-3)), \
     for [i=3:5] datafile index i using 1:6 with linespoints lw 1 dt 2 lc i-2 title sprintf("%d proc p99", 2**(i-3))
unset multiplot
