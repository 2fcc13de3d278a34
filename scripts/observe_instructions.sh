#!/usr/bin/env bash
# Instructions per call of each layer's success path (benches/observe.rs),
# with feature `metrics` off and on: noise-free where time is not (a shared
# machine). Needs valgrind. Usage: bash scripts/observe_instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bin() { # the bench binary built with the given cargo flags
  cargo bench --bench observe --no-run "$@" 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1
}
off=$(bin)
on=$(bin --features metrics)

irefs() { # instructions of `$1` running OBSERVE_COUNT=$2
  OBSERVE_COUNT=$2 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$1" 2>&1 \
    | sed -n 's/.*I *refs: *//p' | tr -d ,
}

per_call() { # instructions per call: the difference of two runs, divided
  local a b
  a=$(irefs "$1" "$2:100000")
  b=$(irefs "$1" "$2:1100000")
  echo $(((b - a) / 1000000))
}

printf '%-34s %12s %12s\n' "layer/variant (instructions/call)" "metrics off" "metrics on"
for layer in breaker retry rate_limit concurrency batch_of_8; do
  for variant in bare layer layer+hooks layer+prometheus; do
    [ "$layer/$variant" = batch_of_8/bare ] && continue
    o=-
    [ "$variant" = layer+prometheus ] || o=$(per_call "$off" "$layer/$variant")
    n=$(per_call "$on" "$layer/$variant")
    printf '%-34s %12s %12s\n' "$layer/$variant" "$o" "$n"
  done
done
